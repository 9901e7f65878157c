"""REBEL update throughput: RankLoop's step vs the reference REBEL approach, same run, same
model, same pairs.

    python3 bench/policy_step.py                       # tiny random Llama, CPU-sized
    python3 bench/policy_step.py --model default --pairs 2 --steps 3

- RankLoop: chosen and rejected in one forward pass, right-padded to the longest sequence of
  the micro-batch (``policy.rebel.collate``).
- Reference: every sequence padded to a fixed 1024 prompt + 2048 response tokens (prompt
  left-padded, response right-padded), chosen and rejected in two separate forward passes.

Both run the same REBEL loss, AdamW step and pairs from the same starting weights; π_t's
log-probs are computed before timing in both (the reference computes them at generation time).
Prints updates/s, useful (non-padding) tokens/s and padded tokens/s for each, and the ratios.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from policy.logprobs import TokenBatch, sequence_logprobs  # noqa: E402
from policy.losses import rebel_loss  # noqa: E402
from policy.rebel import EncodedPolicyPair, collate  # noqa: E402

WORDS = ("the of and to in is that for it as with was on be by this are or from at an have "
         "not which but all were when we there can more if out so what about up into than "
         "them only other new some could time these two may then first any like now").split()


def synthetic_pairs(tokenizer, n: int, seed: int, prompt_range, response_range):
    """Pairs with prompt and response lengths drawn uniformly from the given token ranges."""
    rng = random.Random(seed)

    def text(lo, hi):
        return " ".join(rng.choices(WORDS, k=rng.randint(lo, hi)))

    pairs = []
    for _ in range(n):
        ids = lambda lo, hi: tokenizer(text(lo, hi), add_special_tokens=False)["input_ids"]  # noqa: E731
        pairs.append(EncodedPolicyPair(ids(*prompt_range), ids(*response_range) + [2],
                                       ids(*response_range) + [2], rng.random(), rng.random(),
                                       "g"))
    return pairs


def reference_batch(pairs, side: str, pad_id: int, prompt_pad: int, response_pad: int):
    """One side's sequences at the fixed reference width: prompt left-padded to prompt_pad,
    response right-padded to response_pad."""
    n, width = len(pairs), prompt_pad + response_pad
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    response_mask = torch.zeros((n, width), dtype=torch.long)
    for row, pair in enumerate(pairs):
        response = getattr(pair, f"{side}_ids")
        p, r = len(pair.prompt_ids), len(response)
        input_ids[row, prompt_pad - p:prompt_pad] = torch.tensor(pair.prompt_ids)
        input_ids[row, prompt_pad:prompt_pad + r] = torch.tensor(response)
        attention[row, prompt_pad - p:prompt_pad + r] = 1
        response_mask[row, prompt_pad:prompt_pad + r] = 1
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    return TokenBatch(input_ids, attention, positions, response_mask)


def run(model, pairs, ref, steps, batch_pairs, mode, pad_id, prompt_pad, response_pad):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    model.train()
    useful = padded = 0
    started = None
    for step in range(steps + 1):  # step 0 warms up and is not timed
        if step == 1:
            started = time.perf_counter()
            useful = padded = 0
        rows = [(step * batch_pairs + i) % len(pairs) for i in range(batch_pairs)]
        chunk = [pairs[i] for i in rows]
        r = ref[rows]
        if mode == "rankloop":
            batch = collate(chunk, r, pad_id)
            logp_c, logp_r = batch.split(sequence_logprobs(model, batch.tokens))
            tokens = [batch.tokens]
        else:
            tokens = [reference_batch(chunk, side, pad_id, prompt_pad, response_pad)
                      for side in ("chosen", "rejected")]
            logp_c, logp_r = (sequence_logprobs(model, t) for t in tokens)
        rewards = torch.tensor([[p.reward_chosen, p.reward_rejected] for p in chunk])
        loss = rebel_loss(logp_c, logp_r, r[:, 0], r[:, 1], rewards[:, 0], rewards[:, 1],
                          eta=1.0).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        useful += sum(int(t.attention_mask.sum()) for t in tokens)
        padded += sum(t.input_ids.numel() for t in tokens)
    seconds = time.perf_counter() - started
    return {"updates/s": steps / seconds, "tokens/s": useful / seconds,
            "padded tokens/s": padded / seconds, "s/update": seconds / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny",
                        help="'tiny' (random 4-layer, 256-wide Llama with the SmolLM2 "
                             "tokenizer), 'default' (SmolLM2-135M) or a folder")
    parser.add_argument("--pairs", type=int, default=2, help="pairs per update")
    parser.add_argument("--steps", type=int, default=3, help="timed updates per approach")
    parser.add_argument("--prompt-tokens", type=int, nargs=2, default=(30, 150))
    parser.add_argument("--response-tokens", type=int, nargs=2, default=(40, 300))
    parser.add_argument("--prompt-pad", type=int, default=1024)
    parser.add_argument("--response-pad", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from policy.models import default_model_dir, load_tokenizer, resolve_model

    if args.model == "tiny":
        tokenizer = load_tokenizer(str(default_model_dir()))
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=768,
                             num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=4096, tie_word_embeddings=True)
        make = lambda: LlamaForCausalLM(config)  # noqa: E731
        state = make().state_dict()
    else:
        path = resolve_model(args.model)
        tokenizer = load_tokenizer(path)
        make = lambda: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)  # noqa: E731
        state = None
    n = args.pairs * (args.steps + 1)
    pairs = synthetic_pairs(tokenizer, n, 0, args.prompt_tokens, args.response_tokens)
    ref = torch.randn(n, 2) - 200.0
    pad = tokenizer.pad_token_id
    results = {}
    for mode in ("rankloop", "reference"):
        model = make()
        if state is not None:
            model.load_state_dict(state)
        results[mode] = run(model, pairs, ref, args.steps, args.pairs, mode, pad,
                            args.prompt_pad, args.response_pad)
        del model

    params = sum(p.numel() for p in make().parameters()) / 1e6
    print(f"REBEL update, {args.model} ({params:.0f}M parameters), {args.pairs} pairs per update, "
          f"{args.steps} timed updates, {torch.get_num_threads()} threads, "
          f"prompts {args.prompt_tokens[0]}-{args.prompt_tokens[1]} and responses "
          f"{args.response_tokens[0]}-{args.response_tokens[1]} tokens")
    print(f"{'approach':<44} {'updates/s':>10} {'tokens/s':>10} {'padded tok/s':>13} "
          f"{'s/update':>9}")
    names = {"rankloop": "RankLoop (dynamic padding, one forward)",
             "reference": f"reference ({args.prompt_pad}+{args.response_pad} padding, 2 forwards)"}
    for mode, r in results.items():
        print(f"{names[mode]:<44} {r['updates/s']:>10.3f} {r['tokens/s']:>10.1f} "
              f"{r['padded tokens/s']:>13.1f} {r['s/update']:>9.2f}")
    ratio = results["rankloop"]["updates/s"] / results["reference"]["updates/s"]
    print(f"ratio RankLoop / reference: {ratio:.1f}x updates/s (and useful tokens/s)")
    print("PPO vs TRL's experimental PPO: not measured by this script")


if __name__ == "__main__":
    main()
