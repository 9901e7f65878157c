"""Generation throughput: the same prompts x k through the vLLM and transformers backends.

    python3 bench/generation.py [--model default] [--prompts 32] [--k 4] [--max-new-tokens 64]

Prints one table and the vLLM / transformers ratio. vLLM is timed three ways: engine start,
its first (cold) pass, and a second pass over the same prompts (steady state).
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
    args = parser.parse_args()

    import torch

    from data.chat import format_and_filter
    from data.prompts import load_prompts
    from training.models import load_tokenizer, resolve_model
    from policy.sampling import SamplingConfig, TransformersSampler, VLLMSampler

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

    print()
    print(f"{'backend':<14}{'phase':<20}{'seconds':>10}{'tokens':>10}{'tokens/s':>12}")
    for label, phase, seconds, tokens in rows:
        rate = f"{tokens / seconds:.1f}" if tokens else "-"
        print(f"{label:<14}{phase:<20}{seconds:>10.1f}{tokens:>10}{rate:>12}")
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
