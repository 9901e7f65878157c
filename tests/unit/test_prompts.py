import json

import pytest

from data.prompts import BUNDLED, PromptSourceError, load_prompts

CATEGORIES = {"advice", "coding", "math", "writing", "safety", "multi-step"}


def _write(path, text: str | bytes):
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def test_bundled_set_is_large_varied_and_unique():
    load = load_prompts(BUNDLED)
    assert len(load.prompts) >= 200
    texts = [p.messages[-1]["content"] for p in load.prompts]
    assert len(set(texts)) == len(texts)
    ids = {p.source_id.rsplit("-", 1)[0] for p in load.prompts}
    assert CATEGORIES <= ids
    assert sum(len(t.split(". ")) >= 3 for t in texts) >= 20  # multi-sentence tasks


def test_default_source_is_the_bundled_set_and_limit_applies():
    load = load_prompts(None, limit=5)
    assert [p.source for p in load.prompts] == [BUNDLED] * 5


def test_jsonl_json_csv_and_parquet_read_the_same_prompts(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": "a", "prompt": "First?"}, {"id": "b", "prompt": "Second, with \"quotes\""}]
    sources = [
        _write(tmp_path / "p.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n"),
        _write(tmp_path / "p.json", json.dumps(rows)),
        _write(tmp_path / "p.csv", 'id,prompt\na,First?\nb,"Second, with ""quotes"""\n'),
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    sources.append(str(tmp_path / "p.parquet"))
    for source in sources:
        load = load_prompts(source)
        assert [p.messages for p in load.prompts] == [
            [{"role": "user", "content": "First?"}],
            [{"role": "user", "content": 'Second, with "quotes"'}],
        ], source
        assert [p.source_id for p in load.prompts] == ["a", "b"]


def test_chat_messages_column_is_used_and_trailing_answers_dropped(tmp_path):
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Tell me a joke"},
        {"role": "assistant", "content": "A reference answer"},
    ]
    source = _write(tmp_path / "chat.jsonl", json.dumps({"messages": conversation}) + "\n")
    [prompt] = load_prompts(source).prompts
    assert prompt.messages == conversation[:4]


def test_a_chosen_column_and_empty_rows_counted(tmp_path):
    source = _write(tmp_path / "q.csv", "question,other\nWhy?,x\n   ,y\nHow?,z\n")
    load = load_prompts(source, prompt_column="question")
    assert [p.messages[0]["content"] for p in load.prompts] == ["Why?", "How?"]
    assert load.dropped_empty == 1


def test_save_to_disk_folder_with_splits(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({
        "train": Dataset.from_dict({"prompt": ["t1", "t2"]}),
        "test": Dataset.from_dict({"prompt": ["e1"]}),
    }).save_to_disk(tmp_path / "dd")
    assert len(load_prompts(str(tmp_path / "dd")).prompts) == 2
    assert len(load_prompts(str(tmp_path / "dd"), split="test").prompts) == 1
    with pytest.raises(PromptSourceError, match="no split 'validation'; available: train, test"):
        load_prompts(str(tmp_path / "dd"), split="validation")
    Dataset.from_dict({"messages": [[{"role": "user", "content": "m"}]]}).save_to_disk(
        tmp_path / "ds")
    assert load_prompts(str(tmp_path / "ds")).prompts[0].messages[0]["content"] == "m"


@pytest.mark.parametrize("name,content,message", [
    ("empty.jsonl", "", "contains no rows"),
    ("blank.jsonl", "\n\n  \n", "contains no rows"),
    ("cols.jsonl", '{"text": "x"}\n', "no column 'prompt' \\(columns: text\\); choose one with"),
    ("latin1.jsonl", b'{"prompt": "caf\xe9"}\n', "not valid UTF-8 \\(byte 0xe9 at line 1\\)"),
    ("broken.jsonl", '{"prompt": "ok"}\n{"prompt": \n', "line 2: invalid JSON"),
    ("list.jsonl", '["a"]\n', "expected a JSON object per line"),
    ("all-empty.jsonl", '{"prompt": ""}\n{"prompt": " "}\n', "every prompt .* is empty"),
    ("p.txt", "hello", "unsupported file type .txt"),
    ("bad.parquet", "not parquet", "not a readable parquet file"),
    ("num.jsonl", '{"prompt": 5}\n', "must be a string or a list of chat messages"),
    ("ends.jsonl", '{"prompt": [{"role": "user", "content": "a"}, {"role": "system", '
                   '"content": "b"}]}\n', "must end with a user turn"),
    ("role.jsonl", '{"prompt": [{"role": "robot", "content": "a"}]}\n', "a chat message must be"),
])
def test_bad_files_give_clear_errors(tmp_path, name, content, message):
    with pytest.raises(PromptSourceError, match=message):
        load_prompts(_write(tmp_path / name, content))


def test_missing_file_and_plain_folder(tmp_path):
    with pytest.raises(PromptSourceError, match="does not exist"):
        load_prompts(str(tmp_path / "nope.jsonl"))
    with pytest.raises(PromptSourceError, match="not a dataset saved with save_to_disk"):
        load_prompts(str(tmp_path))


def test_unreachable_hub_dataset_is_one_clear_line():
    with pytest.raises(PromptSourceError, match="cannot load Hugging Face dataset 'nobody/none'") as e:
        load_prompts("nobody/none")
    assert "\n" not in str(e.value)
