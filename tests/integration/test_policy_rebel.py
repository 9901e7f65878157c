"""The REBEL recipe on tiny random Llamas: a synthetic reward rises on held-out prompts, ZeRO-3
on 2 CPU ranks matches one process, step 0 is π_t, LoRA saves a plain model, bad input is one
line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data.scored_pairs import PromptCandidates, ScoredCandidate, build_pairs
from training.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]
WORDS = ("apple river stone cloud green quick table music light paper window orange silver "
         "garden yellow summer horse night water fire bread chair glass house money plant queen "
         "sugar tiger voice winter zebra").split()


@pytest.fixture(scope="module")
def word_model(smol_tokenizer, tmp_path_factory):
    """A tiny random Llama (untied head) whose output rows for 32 one-token words are scaled
    up, so samples mix those words into random tokens: a reward over them varies between
    samples and a policy can learn it in a few steps. Returns (folder, word token ids)."""
    return make_word_model(smol_tokenizer, tmp_path_factory.mktemp("word-llama"))


def make_word_model(tok, path, *, hidden_size: int = 64, num_attention_heads: int = 4,
                    num_key_value_heads: int = 2):
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    ids = [tok(" " + w, add_special_tokens=False)["input_ids"] for w in WORDS]
    words = [x[0] for x in ids if len(x) == 1]
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=2, num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads, max_position_embeddings=2048,
        tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight[words] *= 25
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id,
                                               eos_token_id=config.eos_token_id,
                                               pad_token_id=config.pad_token_id)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path), words


def good_word_reward(tokenizer, good: set[int]):
    """Share of response tokens that are one of the "good" words."""
    def reward(text: str) -> float:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return sum(i in good for i in ids) / max(len(ids), 1)
    return reward


def prompts(n: int, start: int = 0):
    return [[{"role": "user", "content": f"Tell me about thing {i}"}] for i in range(start, start + n)]


def sample(model_dir, messages, k, seed):
    from data.chat import format_chat
    from policy.sampling import SamplingConfig, TransformersSampler

    sampler = TransformersSampler(model_dir, seed=seed, batch_size=16)
    texts = [format_chat(sampler.tokenizer, m) for m in messages]
    out = sampler.generate(texts, SamplingConfig(k=k, temperature=1.0, top_p=1.0,
                                                 max_new_tokens=10, seed=seed))
    sampler.close()
    return out


def rebel_config(output, model, **overrides):
    from policy.rebel import RebelConfig

    base = dict(output=str(output), model=model, learning_rate=1e-4, eta=10.0, epochs=3,
                per_device_batch_size=8, warmup_ratio=0.0, lr_schedule="constant",
                log_every=1, eval_fraction=0.25, save_every=1000)
    return RebelConfig(**{**base, **overrides})


def test_held_out_reward_rises_after_training(word_model, smol_tokenizer, tmp_path):
    from policy.rebel import train_rebel

    model_dir, words = word_model
    reward = good_word_reward(smol_tokenizer, set(words[: len(words) // 2]))
    train_prompts = prompts(40)
    samples = sample(model_dir, train_prompts, k=4, seed=0)
    pairs = build_pairs([PromptCandidates(p, tuple(ScoredCandidate(s.text, reward(s.text))
                                                   for s in group))
                         for p, group in zip(train_prompts, samples)])
    summary = train_rebel(rebel_config(tmp_path / "out", model_dir), pairs=pairs, progress=False)
    assert summary.train_pairs + summary.eval_pairs == len(pairs.pairs) > 30
    held_out = prompts(24, start=1000)

    def mean_reward(model):
        groups = sample(model, held_out, k=4, seed=1)
        return sum(reward(s.text) for g in groups for s in g) / (4 * len(groups))

    before, after = mean_reward(model_dir), mean_reward(str(tmp_path / "out"))
    assert after > before + 0.01, (before, after)
    metrics = read_metrics(tmp_path / "out" / "metrics.jsonl")
    train = [m for m in metrics if "train/loss" in m]
    # Step 1 runs π_θ = π_t (dropout off): every log-ratio is exactly 0.
    assert abs(train[0]["train/logratio_chosen"]) < 1e-4 and abs(train[0]["train/kl"]) < 1e-4
    assert abs(train[-1]["train/logratio_chosen"]) > 1e-2
    for key in ("train/sign_agreement", "train/grad_norm", "train/logratio_rejected",
                "train/learning_rate"):
        assert key in train[-1]
    evals = [m for m in metrics if "eval/loss" in m]
    assert len(evals) == 3 and evals[-1]["eval/sign_agreement"] > 0.5


def scored_pairs_file(path: Path, n: int) -> str:
    rows = []
    for i in range(n):
        rows.append({"prompt": [{"role": "user", "content": f"Question {i} about {WORDS[i % 30]}"}],
                     "chosen": [{"role": "assistant",
                                 "content": " ".join(WORDS[(i + j) % 30] for j in range(3 + i % 5))}],
                     "rejected": [{"role": "assistant",
                                   "content": " ".join(WORDS[(2 * i + j) % 30] for j in range(2 + i % 7))}],
                     "score_chosen": 1.0 + (i % 3) * 0.5, "score_rejected": -0.5 + (i % 2)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def losses(output):
    return [m["train/loss"] for m in read_metrics(Path(output) / "metrics.jsonl")
            if "train/loss" in m]


def test_lora_saves_a_plain_model_that_moved(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from launch.cli import main

    data = scored_pairs_file(tmp_path / "pairs.jsonl", 8)
    out = tmp_path / "lora"
    assert main(["train", "rebel", "--data", data, "--model", tiny_model_dir, "--lr", "1e-2",
                 "--lora-r", "4", "--max-steps", "2", "--eval-fraction", "0",
                 "--no-progress", "--output", str(out)]) == 0
    saved = AutoModelForCausalLM.from_pretrained(out).state_dict()
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert not any("lora" in k for k in saved)
    assert saved.keys() == start.keys()
    moved = [k for k in saved if not torch.equal(saved[k], start[k])]
    assert any("q_proj" in k for k in moved)
    assert not any("norm" in k for k in moved)  # only the adapted linear layers changed


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "launch.cli", *args], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


def one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("rankloop: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_empty_and_all_identical_pairs_are_one_line(tiny_model_dir, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    one_line_error(run_cli("train", "rebel", "--data", str(empty), "--model", tiny_model_dir,
                           "--output", str(tmp_path / "o1")), "contains no rows")
    same = tmp_path / "same.jsonl"
    same.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": "same", "rejected": "same"})
                            + "\n" for i in range(4)))
    one_line_error(run_cli("train", "rebel", "--data", str(same), "--model", tiny_model_dir,
                           "--output", str(tmp_path / "o2")),
                   "no usable preference pairs", "4 identical")


def test_a_db_without_rankings_or_scores_is_one_line(tiny_model_dir, tmp_path):
    from data import store

    db = tmp_path / "r.db"
    store.open_store(db).close()
    one_line_error(run_cli("train", "rebel", "--db", str(db), "--model", tiny_model_dir,
                           "--output", str(tmp_path / "o")), "no ranked candidates")


def test_mismatched_tokenizer_is_one_line(smol_tokenizer, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=1000, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=1))
    model.save_pretrained(tmp_path / "small-vocab")
    smol_tokenizer.save_pretrained(tmp_path / "small-vocab")
    data = scored_pairs_file(tmp_path / "pairs.jsonl", 4)
    one_line_error(run_cli("train", "rebel", "--data", data, "--model",
                           str(tmp_path / "small-vocab"), "--output", str(tmp_path / "o")),
                   "do not belong together")


def test_resume_from_a_corrupt_checkpoint_is_one_line(tiny_model_dir, tmp_path, capsys):
    from launch.cli import main

    data = scored_pairs_file(tmp_path / "pairs.jsonl", 8)
    out = tmp_path / "run"
    args = ["train", "rebel", "--data", data, "--model", tiny_model_dir, "--max-steps", "2",
            "--eval-fraction", "0", "--save-every", "1", "--no-progress", "--output", str(out)]
    assert main(args) == 0
    [checkpoint] = (out / "checkpoints").glob("step-*")
    for weights in [*checkpoint.rglob("*.safetensors"), *checkpoint.rglob("*.bin")]:
        weights.write_bytes(b"not a tensor file")
    capsys.readouterr()

    def one_line(*fragments):
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("rankloop: error: checkpoint ") and "Traceback" not in err
        for fragment in fragments:
            assert fragment in err[-1], err[-1]

    one_line("cannot be loaded", "--no-resume")
    (checkpoint / "trainer_state.json").write_text("{truncated")
    one_line("is corrupt", "--no-resume")
    assert main([*args, "--no-resume"]) == 0


def test_resume_continues_exactly_from_a_middle_checkpoint(tiny_model_dir, tmp_path):
    """Model, optimizer, scheduler and data position come back: a run resumed at step 2 of 4
    ends with the same weights and losses as the uninterrupted run."""
    from safetensors.torch import load_file

    from data.scored_pairs import pairs_from_file
    from policy.rebel import train_rebel

    pairs = pairs_from_file(scored_pairs_file(tmp_path / "pairs.jsonl", 12))
    settings = dict(learning_rate=1e-3, epochs=1, max_steps=4, per_device_batch_size=2,
                    eval_fraction=0.0, save_every=2, keep_checkpoints=2,
                    lr_schedule="cosine", warmup_ratio=0.25)
    train_rebel(rebel_config(tmp_path / "whole", tiny_model_dir, **settings), pairs=pairs,
                progress=False)
    out = tmp_path / "resumed"
    train_rebel(rebel_config(out, tiny_model_dir, **settings), pairs=pairs, progress=False)
    import shutil

    shutil.rmtree(out / "checkpoints" / "step-0000004")
    summary = train_rebel(rebel_config(out, tiny_model_dir, **settings), pairs=pairs,
                          progress=False)
    assert summary.resumed_from_step == 2
    assert losses(out) == pytest.approx(losses(tmp_path / "whole"), abs=1e-6)
    whole = load_file(str(tmp_path / "whole" / "model.safetensors"))
    resumed = load_file(str(out / "model.safetensors"))
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], atol=1e-6, rtol=0)


def test_data_accepts_the_apps_database_and_trains_on_its_rankings(tiny_model_dir, tmp_path,
                                                                    capsys):
    from data import labeling, store
    from data.rankings import Submission
    from launch.cli import main
    from tests.labeling_fixtures import make_labeling_db

    db_file = make_labeling_db(tmp_path / "app.db", n_prompts=4)
    db = store.open_store(db_file)
    ann = labeling.get_user(db, "ann")
    for _ in range(4):
        task = labeling.next_assignment(db, ann.id, labeling.QueuePolicy())
        ids = tuple(task.candidate_ids)
        labeling.submit_assignment(db, task.id, ann.id, Submission(ids, (2, 1, 3)))
    assert main(["train", "rebel", "--data", db_file, "--model", tiny_model_dir, "--output",
                 str(tmp_path / "o"), "--eval-fraction", "0.25", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "3 training pairs, 1 held out" in out  # one best/worst pair per ranked prompt


def test_the_reference_optimizer_settings_give_the_reference_update(tiny_model_dir, tmp_path):
    """With the REBEL reference's AdamW (betas (0.9, 0.95), weight decay 1e-6) and no
    clipping, three recipe steps equal three hand-written steps of the reference's arithmetic:
    mean of (log-ratio gap − η·reward gap)² over the batch, torch AdamW, no clipping."""
    from safetensors.torch import load_file

    from data.scored_pairs import pairs_from_file
    from policy.logprobs import sequence_logprobs
    from policy.losses import rebel_loss
    from policy.pair_batches import collate, prepare_pairs
    from policy.rebel import train_rebel
    from training.models import load_policy, load_tokenizer
    from training.plan import global_batches, micro_batches

    pairs = pairs_from_file(scored_pairs_file(tmp_path / "pairs.jsonl", 4))
    settings = dict(learning_rate=1e-3, epochs=3, per_device_batch_size=4, eval_fraction=0.0,
                    eta=2.0, adam_betas=(0.9, 0.95), weight_decay=1e-6, max_grad_norm=0.0)
    config = rebel_config(tmp_path / "ref", tiny_model_dir, **settings)
    train_rebel(config, pairs=pairs, progress=False)
    saved = load_file(str(tmp_path / "ref" / "model.safetensors"))
    tokenizer = load_tokenizer(tiny_model_dir, padding_side="right")
    train, _, _ = prepare_pairs(config, tokenizer, pairs)
    lengths = [p.length for p in train]

    def by_hand(betas):
        model = load_policy(tiny_model_dir)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=betas, eps=1e-8,
                                      weight_decay=1e-6)
        with torch.no_grad():
            ref = sequence_logprobs(model, collate(train, torch.zeros(4, 2),
                                                   tokenizer.pad_token_id).tokens)
        norms = []
        for epoch in range(3):
            # The recipe's row order (length-sorted): a gradient summed in another order
            # differs in its last bits, which Adam magnifies where a gradient is near 0.
            [step] = global_batches(lengths, 4, config.seed, epoch, 1)
            rows = micro_batches(step, lengths, 1)[0]
            batch = collate([train[i] for i in rows], torch.zeros(4, 2), tokenizer.pad_token_id)
            logp_chosen, logp_rejected = batch.split(sequence_logprobs(model, batch.tokens))
            loss = rebel_loss(logp_chosen, logp_rejected, ref[:4][rows], ref[4:][rows],
                              batch.reward_chosen, batch.reward_rejected, eta=2.0).mean()
            loss.backward()
            norms.append(float(torch.nn.utils.get_total_norm(
                [p.grad for p in model.parameters() if p.grad is not None])))
            optimizer.step()
            optimizer.zero_grad()
        return model.state_dict(), norms

    def largest_difference(state):
        return max((saved[k] - state[k]).abs().max().item() for k in saved)

    reference, norms = by_hand((0.9, 0.95))
    assert largest_difference(reference) < 1e-6
    assert largest_difference(by_hand((0.9, 0.999))[0]) > 1e-5  # the betas reach the optimizer
    logged = [m["train/grad_norm"] for m in read_metrics(tmp_path / "ref" / "metrics.jsonl")
              if "train/grad_norm" in m]
    assert logged == pytest.approx(norms, rel=1e-4)

    # Clipping below that norm changes the update: the clipping knob reaches the step too.
    train_rebel(rebel_config(tmp_path / "clipped", tiny_model_dir,
                             **{**settings, "max_grad_norm": norms[0] / 100}),
                pairs=pairs, progress=False)
    clipped = load_file(str(tmp_path / "clipped" / "model.safetensors"))
    assert largest_difference(clipped) > 1e-5


def test_a_kl_budget_ends_training_at_the_step_that_reaches_it(tiny_model_dir, tmp_path):
    """The budget is checked on the KL estimate the steps log; training stops there, says so
    in the closing line and metrics, and a rerun trains no further."""
    from data.scored_pairs import pairs_from_file
    from policy.rebel import train_rebel

    pairs = pairs_from_file(scored_pairs_file(tmp_path / "pairs.jsonl", 16))
    settings = dict(learning_rate=3e-3, epochs=2, per_device_batch_size=2, eval_fraction=0.0,
                    lr_schedule="constant", kl_window=2)
    whole = train_rebel(rebel_config(tmp_path / "whole", tiny_model_dir, **settings),
                        pairs=pairs, progress=False)
    kls = [m["train/kl"] for m in read_metrics(tmp_path / "whole" / "metrics.jsonl")
           if "train/kl" in m]
    assert whole.steps == 16 and whole.stopped_early is None
    budget = max(kls[:8]) / 2  # reached within the first epoch, not at its first step
    first = next(i for i, kl in enumerate(kls) if kl >= budget) + 1
    out = tmp_path / "budget"
    summary = train_rebel(rebel_config(out, tiny_model_dir, kl_budget=budget, **settings),
                          pairs=pairs, progress=False)
    assert summary.steps == first < 16 and summary.planned_steps == 16
    assert f"stopped at step {first}: KL" in summary.line()
    assert f"{first} steps of 16 planned" in summary.line()
    logged = read_metrics(out / "metrics.jsonl")
    assert [m["train/kl_budget_reached"] for m in logged if "train/kl_budget_reached" in m] \
        == [pytest.approx(kls[first - 1], rel=1e-4)]
    assert losses(out) == pytest.approx(losses(tmp_path / "whole")[:first], abs=1e-6)
    again = train_rebel(rebel_config(out, tiny_model_dir, kl_budget=budget, **settings),
                        pairs=pairs, progress=False)
    assert again.steps == first and again.stopped_early == summary.stopped_early


def test_with_held_out_pairs_the_kl_budget_is_measured_on_them(tiny_model_dir, tmp_path):
    """Held-out prompts' responses, which no step fits, decide: checked every
    ``kl_check_every`` steps, and training ends at the first check at or past the budget."""
    from data.scored_pairs import pairs_from_file
    from policy.rebel import train_rebel

    pairs = pairs_from_file(scored_pairs_file(tmp_path / "pairs.jsonl", 24))
    settings = dict(learning_rate=3e-3, epochs=2, per_device_batch_size=2, eval_fraction=0.25,
                    lr_schedule="constant")
    whole = train_rebel(rebel_config(tmp_path / "whole", tiny_model_dir, eval_every=1,
                                     **settings), pairs=pairs, progress=False)
    logged = read_metrics(tmp_path / "whole" / "metrics.jsonl")
    held = {m["step"]: m["eval/kl"] for m in logged if "eval/kl" in m}
    assert whole.eval_pairs > 0 and sorted(held) == list(range(1, whole.steps + 1))
    budget = held[whole.steps // 2]  # reached mid-run, on an even step or the one after
    first = next(s for s in sorted(held) if s % 2 == 0 and held[s] >= budget)
    assert first < whole.steps
    out = tmp_path / "budget"
    summary = train_rebel(rebel_config(out, tiny_model_dir, kl_budget=budget, kl_check_every=2,
                                       kl_window=1, **settings), pairs=pairs, progress=False)
    assert summary.steps == first
    assert f"stopped at step {first}: held-out KL {held[first]:.3f}" in summary.line()
    checks = read_metrics(out / "metrics.jsonl")
    # Each check logged once; the stopping check is the last step's evaluation.
    checked = [m["step"] for m in checks if "eval/kl" in m]
    assert checked == list(range(2, first + 1, 2))
    assert [m["eval/kl"] for m in checks if "eval/kl" in m] == pytest.approx(
        [held[s] for s in range(2, first + 1, 2)], rel=1e-4)
