"""ArmoRM on a tiny random instance with the public checkpoint's weight names and a Llama 3 chat
template built here: loading without remote code, the score formula, save/reload, and the gate
position in multi-turn conversations with left or right padding."""

import json

import pytest
import torch
from safetensors.torch import save_file

from reward.armorm import (
    ARCHITECTURE,
    ARMORM_OBJECTIVES,
    GATING_PATTERN_TEXT,
    LlamaForRewardModelWithGating,
)
from reward.batches import pad_sequences, tokenize_conversations
from reward.score import load_scorer

LLAMA3_TEMPLATE = (
    "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
GATING = {"num_objectives": 19, "gating_hidden_dim": 16, "gating_n_hidden": 3,
          "gating_temperature": 10}
K = len(ARMORM_OBJECTIVES)


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


CONVERSATIONS = [
    [user("What is tea?"), assistant("A drink made from leaves.")],
    [user("Hi"), assistant("Hello, how can I help?"), user("Name a colour."), assistant("Blue.")],
    [{"role": "system", "content": "Be brief."}, user("2+2?"), assistant("4")],
    [user("Tell me a long story about a fox and a river, please."), assistant("Once, a fox.")],
]


@pytest.fixture(scope="module")
def llama3_tokenizer(smol_tokenizer, tmp_path_factory):
    """The SmolLM2 vocabulary plus Llama 3's chat special tokens and template."""
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("llama3-tokenizer")
    smol_tokenizer.save_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.add_special_tokens({
        "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
        "pad_token": "<|finetune_right_pad_id|>",
        "additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>"],
    })
    tokenizer.chat_template = LLAMA3_TEMPLATE
    return tokenizer


@pytest.fixture(scope="module")
def public_layout_dir(llama3_tokenizer, tmp_path_factory):
    """A folder laid out like RLHFlow/ArmoRM-Llama3-8B-v0.1: a llama config naming the custom
    architecture through auto_map (whose code is absent here) and weights under its names."""
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(llama3_tokenizer), hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, pad_token_id=llama3_tokenizer.pad_token_id,
        bos_token_id=llama3_tokenizer.bos_token_id, eos_token_id=llama3_tokenizer.eos_token_id,
    )
    weights = {f"model.{k}": v.clone() for k, v in LlamaModel(config).state_dict().items()}
    weights["regression_layer.weight"] = torch.randn(K, 32)
    weights["reward_transform_matrix"] = torch.eye(K) + 0.1 * torch.randn(K, K)
    weights["gating.logit_scale"] = torch.tensor([2.0])
    for i, (rows, cols) in enumerate([(16, 32), (16, 16), (16, 16), (K, 16)]):
        weights[f"gating.layers.{i}.weight"] = torch.randn(rows, cols) * 0.5
        weights[f"gating.layers.{i}.bias"] = torch.randn(rows) * 0.1
    path = tmp_path_factory.mktemp("armorm-public-layout")
    save_file({k: v.contiguous() for k, v in weights.items()}, str(path / "model.safetensors"),
              metadata={"format": "pt"})
    config_json = {**config.to_dict(), **GATING, "architectures": [ARCHITECTURE],
                   "auto_map": {"AutoModelForSequenceClassification":
                                "modeling_custom.LlamaForRewardModelWithGating"}}
    (path / "config.json").write_text(json.dumps(config_json))
    llama3_tokenizer.save_pretrained(path)
    return path, weights, config


def by_hand_score(weights, config, ids: list[int], gate_at: int) -> tuple[float, torch.Tensor]:
    """The ArmoRM formula written out from the raw tensors, on an unpadded sequence."""
    from transformers import LlamaModel

    backbone = LlamaModel(config)
    backbone.load_state_dict({k[len("model."):]: v for k, v in weights.items()
                              if k.startswith("model.")})
    with torch.no_grad():
        hidden = backbone(input_ids=torch.tensor([ids])).last_hidden_state[0]
    rewards = weights["regression_layer.weight"] @ hidden[-1]
    x = hidden[gate_at]
    for i in range(3):
        layer = f"gating.layers.{i}"
        x = torch.relu(weights[f"{layer}.weight"] @ x + weights[f"{layer}.bias"])
    logits = weights["gating.layers.3.weight"] @ x + weights["gating.layers.3.bias"]
    gate = torch.softmax(logits / 10, dim=0) * weights["gating.logit_scale"][0]
    return float((gate * (rewards @ weights["reward_transform_matrix"])).sum()), rewards


def expected_gate(tokenizer, conversation) -> int:
    """The <|eot_id|> closing the last user turn: the last token of the prompt alone."""
    return len(tokenize_conversations(tokenizer, [conversation[:-1]])[0]) - 1


def test_parameter_names_and_shapes_are_the_public_checkpoints(public_layout_dir):
    _, weights, config = public_layout_dir
    for key, value in GATING.items():
        setattr(config, key, value)
    model = LlamaForRewardModelWithGating(config)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert own == {k: tuple(v.shape) for k, v in weights.items()}
    assert not model.reward_transform_matrix.requires_grad
    assert torch.equal(model.reward_transform_matrix, torch.eye(K))  # fresh: identity
    assert model.gating.logit_scale.item() == 1.0


def test_public_layout_loads_without_remote_code_and_scores_by_the_formula(public_layout_dir,
                                                                           llama3_tokenizer):
    path, weights, config = public_layout_dir
    assert not (path / "modeling_custom.py").exists()
    scorer = load_scorer(f"armorm:{path}", device="cpu")
    assert isinstance(scorer.model, LlamaForRewardModelWithGating)
    assert torch.equal(scorer.model.reward_transform_matrix, weights["reward_transform_matrix"])
    results = scorer.score_detailed(CONVERSATIONS, batch_size=3)
    ids = tokenize_conversations(llama3_tokenizer, CONVERSATIONS)
    for conversation, seq, result in zip(CONVERSATIONS, ids, results):
        score, rewards = by_hand_score(weights, config, seq,
                                       expected_gate(llama3_tokenizer, conversation))
        assert result.score == pytest.approx(score, abs=1e-4)
        assert list(result.objectives) == list(ARMORM_OBJECTIVES)
        assert list(result.objectives.values()) == pytest.approx(rewards.tolist(), abs=1e-4)
    assert scorer.score(CONVERSATIONS) == pytest.approx([r.score for r in results], abs=1e-5)


def test_save_and_reload_scores_the_same(public_layout_dir, tmp_path):
    path, _, _ = public_layout_dir
    scorer = load_scorer(f"armorm:{path}", device="cpu")
    before = scorer.score(CONVERSATIONS)
    scorer.model.save_pretrained(tmp_path)
    scorer.tokenizer.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["architectures"] == [ARCHITECTURE] and saved["num_objectives"] == K
    reloaded = load_scorer(str(tmp_path), device="cpu")  # the kind is read from the config
    assert reloaded.spec.kind == "armorm"
    assert reloaded.score(CONVERSATIONS) == pytest.approx(before, abs=1e-5)


@pytest.mark.parametrize("side", ["left", "right"])
def test_gate_and_read_out_positions_in_multi_turn_batches(public_layout_dir, llama3_tokenizer,
                                                           side):
    path, _, _ = public_layout_dir
    model = load_scorer(f"armorm:{path}", device="cpu").model
    ids = tokenize_conversations(llama3_tokenizer, CONVERSATIONS)
    input_ids, mask = pad_sequences(ids, llama3_tokenizer.pad_token_id, side=side)
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=mask)
    width = input_ids.shape[1]
    offsets = [width - len(s) if side == "left" else 0 for s in ids]
    gates = [expected_gate(llama3_tokenizer, c) + o for c, o in zip(CONVERSATIONS, offsets)]
    assert out.gate_positions.tolist() == gates
    assert all(input_ids[row, g] == llama3_tokenizer.convert_tokens_to_ids("<|eot_id|>")
               for row, g in enumerate(gates))
    assert out.last_positions.tolist() == [o + len(s) - 1 for o, s in zip(offsets, ids)]
    # Multi-turn: the gate sits after the second user turn, not the first.
    first_user_end = len(tokenize_conversations(llama3_tokenizer, [CONVERSATIONS[1][:1]])[0]) - 1
    assert gates[1] - offsets[1] > first_user_end
    with torch.no_grad():
        alone = [model(input_ids=torch.tensor([s])).score.item() for s in ids]
    assert out.score.tolist() == pytest.approx(alone, abs=1e-4)


def test_conversations_without_an_llama3_assistant_turn_are_refused(public_layout_dir,
                                                                    llama3_tokenizer):
    path, _, _ = public_layout_dir
    scorer = load_scorer(f"armorm:{path}", device="cpu")
    assert scorer.model.gating_token_pattern == tuple(
        llama3_tokenizer.encode(GATING_PATTERN_TEXT, add_special_tokens=False))
    with pytest.raises(ValueError, match="must end with the assistant reply"):
        scorer.score([[user("only a question")]])
    with pytest.raises(ValueError, match="Llama 3 chat format"):
        scorer.score(["plain text with no chat turns"])


def test_rankloop_score_stores_armorm_scores_with_objectives(public_layout_dir, tmp_path):
    from data import store
    from launch.cli import main

    path, _, _ = public_layout_dir
    db = store.open_store(tmp_path / "r.db")
    [prompt_id] = store.upsert_prompts(db, [(CONVERSATIONS[1][:-1], "test", "0")])
    run_id = store.get_or_create_run(db, store.RunSettings("m", "transformers", 2, 0.8, 0.9, 8, 0))
    ids = store.add_candidates(db, prompt_id, run_id, [store.CandidateIn(t, 1, "stop")
                                                       for t in ("Blue.", "Seven.")])
    assert main(["score", "--scorer", f"armorm:{path}", "--db", str(tmp_path / "r.db")]) == 0
    scores = store.model_scores(db, f"armorm:{path.resolve()}")
    assert set(scores) == set(ids)
    expected = load_scorer(f"armorm:{path}", device="cpu").score(
        [CONVERSATIONS[1][:-1] + [assistant(t)] for t in ("Blue.", "Seven.")])
    assert [scores[i].score for i in ids] == pytest.approx(expected, abs=1e-5)
    assert set(scores[ids[0]].objectives) == set(ARMORM_OBJECTIVES)
