"""Generation throughput: the same prompts x k through the vLLM and transformers backends, and
through 1 against N data-parallel processes.

    python3 bench/generation.py [--model default] [--prompts 32] [--k 4] [--max-new-tokens 64]
        [--only backends|processes] [--processes 2] [--parallel-backend transformers]

Prints one table and the ratios. vLLM is timed three ways: engine start, its first (cold) pass,
and a second pass over the same prompts (steady state). The data-parallel part runs the same
prompts on one engine and on ``--processes`` engines (one per GPU on a GPU machine, a share of
the cores on CPU), each timed after its engines started, and checks that both drew the same
samples (per-sample seeds).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--prompts", type=int, default=32, help="bundled prompts to use")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32, help="transformers batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-vllm", action="store_true")
    parser.add_argument("--only", choices=("backends", "processes"), default=None,
                        help="run one part (default: both)")
    parser.add_argument("--processes", type=int, default=2, help="data-parallel engines")
    parser.add_argument("--parallel-backend", default="transformers",
                        help="backend of the data-parallel part (default: transformers)")
    args = parser.parse_args()

    import torch

    from data.chat import format_and_filter
    from data.prompts import load_prompts
    from training.models import load_tokenizer, resolve_model
    from policy.sampling import SamplingConfig, TransformersSampler, VLLMSampler, make_sampler

    model = resolve_model(args.model)
    tokenizer = load_tokenizer(model)
    formatted, _ = format_and_filter(tokenizer, load_prompts(limit=args.prompts).prompts)
    texts = [f.text for f in formatted]
    config = SamplingConfig(k=args.k, max_new_tokens=args.max_new_tokens, seed=args.seed)
    device = "cuda" if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    print(f"model {model} | {len(texts)} prompts x k={args.k} | <= {args.max_new_tokens} new "
          f"tokens | T={config.temperature} top_p={config.top_p} | {device}", flush=True)

    rows: list[tuple[str, str, float, int]] = []

    def timed_pass(sampler, label: str, phase: str) -> float:
        start = time.perf_counter()
        samples = sampler.generate(texts, config)
        seconds = time.perf_counter() - start
        tokens = sum(s.token_count for per_prompt in samples for s in per_prompt)
        rows.append((label, phase, seconds, tokens))
        print(f"  {label} {phase}: {seconds:.1f} s, {tokens} tokens", flush=True)
        return tokens / seconds

    if args.only != "processes":
        backends(args, model, texts, config, rows, timed_pass, TransformersSampler, VLLMSampler)
    if args.only != "backends":
        processes(args, model, texts, config, rows, make_sampler)


def print_rows(rows) -> None:
    print()
    print(f"{'backend':<22}{'phase':<20}{'seconds':>10}{'tokens':>10}{'tokens/s':>12}")
    for label, phase, seconds, tokens in rows:
        rate = f"{tokens / seconds:.1f}" if tokens else "-"
        print(f"{label:<22}{phase:<20}{seconds:>10.1f}{tokens:>10}{rate:>12}")


def processes(args, model, texts, config, rows, make_sampler) -> None:
    """One engine against ``args.processes`` engines on the same prompts."""
    rows.clear()
    rates, outputs = {}, {}
    for size in (1, args.processes):
        label = f"{args.parallel_backend} x{size}"
        start = time.perf_counter()
        options = {"batch_size": args.batch_size} if args.parallel_backend == "transformers" \
            else {"max_model_len": 2048}
        sampler = make_sampler(args.parallel_backend, model, config, data_parallel_size=size,
                               **options)
        rows.append((label, "start", time.perf_counter() - start, 0))
        start = time.perf_counter()
        outputs[size] = sampler.generate(texts, config)
        seconds = time.perf_counter() - start
        tokens = sum(s.token_count for per_prompt in outputs[size] for s in per_prompt)
        rows.append((label, "generate", seconds, tokens))
        rates[size] = tokens / seconds
        print(f"  {label} generate: {seconds:.1f} s, {tokens} tokens", flush=True)
        sampler.close()
    print_rows(rows)
    print(f"\n{args.processes} processes / 1 process: {rates[args.processes] / rates[1]:.2f}x "
          f"tokens/s; same samples: {outputs[1] == outputs[args.processes]}")


def backends(args, model, texts, config, rows, timed_pass, TransformersSampler,
             VLLMSampler) -> None:
    start = time.perf_counter()
    hf = TransformersSampler(model, seed=args.seed, batch_size=args.batch_size)
    rows.append(("transformers", "load", time.perf_counter() - start, 0))
    hf_rate = timed_pass(hf, "transformers", "generate")
    hf.close()
    del hf

    vllm_rate = vllm_cold_rate = None
    if not args.skip_vllm:
        start = time.perf_counter()
        engine = VLLMSampler(model, seed=args.seed, max_model_len=2048)
        rows.append(("vllm", "engine start", time.perf_counter() - start, 0))
        vllm_cold_rate = timed_pass(engine, "vllm", "first pass (cold)")
        vllm_rate = timed_pass(engine, "vllm", "steady state")
        engine.close()

    print_rows(rows)
    if vllm_rate:
        print(f"\nvLLM steady state / transformers: {vllm_rate / hf_rate:.2f}x")
        print(f"vLLM first pass  / transformers: {vllm_cold_rate / hf_rate:.2f}x")
        engine_start = next(s for label, phase, s, _ in rows if phase == "engine start")
        hf_total = sum(s for label, _, s, _ in rows if label == "transformers")
        vllm_once = engine_start + next(s for _, phase, s, _ in rows if phase.startswith("first"))
        print(f"one run end to end (load + generate): transformers {hf_total:.1f} s, "
              f"vLLM {vllm_once:.1f} s")


if __name__ == "__main__":
    main()
