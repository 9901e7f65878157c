"""Preference pairs for the policy recipes (REBEL, DPO): reading them from a TRL-format file or
the app's database (human ranks or a reward model's scores, ``data.scored_pairs``), tokenizing
prompt and responses as they were sampled, the held-out split, the ``PairBatch`` container, and
the frozen policy's log-probs computed once before training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from data.errors import ConfigError
from data.scored_pairs import (
    PairSet,
    ScoredPair,
    filter_by_length,
    require_pairs,
    split_held_out,
)
from data.preferences import PreferenceSourceError
from policy.logprobs import TokenBatch, pack, sequence_logprobs
from training.plan import spread


class PairSource(Protocol):
    """The fields of a recipe config (``RebelConfig``, ``DPOConfig``) that say where the pairs
    come from and which to keep."""

    data: str | None
    db: str | None
    scorer: str | None
    run_id: int | None
    pair_mode: str
    split: str
    limit: int | None
    max_prompt_tokens: int
    max_response_tokens: int
    eval_fraction: float
    seed: int


@dataclass(frozen=True)
class EncodedScoredPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    """Response tokens, ending with EOS."""
    rejected_ids: list[int]
    reward_chosen: float
    reward_rejected: float
    group: str

    @property
    def length(self) -> int:
        """Padded width of this pair in a batch."""
        return len(self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids))


@dataclass
class PairBatch:
    """B pairs as one forward pass.

    tokens: ``[2B, T]``, rows 0..B−1 prompt+chosen and B..2B−1 prompt+rejected (pair i in rows
    i and B+i). ref_logp_chosen, ref_logp_rejected, reward_chosen, reward_rejected: ``[B]``.
    """

    tokens: TokenBatch
    ref_logp_chosen: torch.Tensor
    ref_logp_rejected: torch.Tensor
    reward_chosen: torch.Tensor
    reward_rejected: torch.Tensor

    @property
    def num_pairs(self) -> int:
        return self.reward_chosen.shape[0]

    def split(self, per_sequence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return per_sequence[: self.num_pairs], per_sequence[self.num_pairs:]

    def to(self, device) -> PairBatch:
        return PairBatch(self.tokens.to(device), self.ref_logp_chosen.to(device),
                          self.ref_logp_rejected.to(device), self.reward_chosen.to(device),
                          self.reward_rejected.to(device))


def prompt_token_ids(tokenizer, prompts: list) -> list[list[int]]:
    """Chat prompts through the chat template (generation prompt added, as sampled); raw-text
    prompts as they are, with the tokenizer's special tokens."""
    from data.chat import format_chat

    out = []
    for prompt in prompts:
        if isinstance(prompt, str):
            out.append(tokenizer(prompt)["input_ids"])
        else:
            out.append(tokenizer(format_chat(tokenizer, prompt), add_special_tokens=False)
                       ["input_ids"])
    return out


def response_token_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """Each response's tokens followed by EOS, as the sampler produced them."""
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"tokenizer {tokenizer.name_or_path!r} has no EOS token")
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    return [list(seq) + [tokenizer.eos_token_id] for seq in ids]


def encode_scored_pairs(tokenizer, pairs: list[ScoredPair], *, max_prompt_tokens: int,
                        max_response_tokens: int) -> tuple[list[EncodedScoredPair], dict[str, int]]:
    """Tokenized pairs within the length limits, and drop counts by reason."""
    prompts = prompt_token_ids(tokenizer, [p.prompt for p in pairs])
    chosen = response_token_ids(tokenizer, [p.chosen for p in pairs])
    rejected = response_token_ids(tokenizer, [p.rejected for p in pairs])
    kept, dropped = filter_by_length(pairs, [len(x) for x in prompts], [len(x) for x in chosen],
                                     [len(x) for x in rejected],
                                     max_prompt_tokens=max_prompt_tokens,
                                     max_response_tokens=max_response_tokens)
    encoded = [EncodedScoredPair(prompts[i], chosen[i], rejected[i], pairs[i].reward_chosen,
                                 pairs[i].reward_rejected, pairs[i].prompt_key()) for i in kept]
    return encoded, dropped


def collate(pairs: list[EncodedScoredPair], ref_logps: torch.Tensor, pad_token_id: int,
            *, side: str = "right", width: int | None = None) -> PairBatch:
    """ref_logps: ``[len(pairs), 2]`` (chosen, rejected) for these pairs."""
    tokens = pack([p.prompt_ids for p in pairs] * 2,
                  [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs],
                  pad_token_id, side=side, width=width)
    return PairBatch(tokens, ref_logps[:, 0].float(), ref_logps[:, 1].float(),
                      torch.tensor([p.reward_chosen for p in pairs], dtype=torch.float32),
                      torch.tensor([p.reward_rejected for p in pairs], dtype=torch.float32))


def is_sqlite_file(source: str) -> bool:
    """True for an SQLite database (the app's store), recognised by its header."""
    path = Path(source).expanduser()
    if not path.is_file():
        return False
    with path.open("rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


def read_pairs(config: PairSource) -> PairSet:
    from data.scored_pairs import pairs_from_db, pairs_from_file

    if config.data and not is_sqlite_file(config.data):
        pairs = pairs_from_file(config.data, split=config.split, limit=config.limit)
    else:
        from data import store

        db_file = config.data or config.db
        if db_file is None or not Path(db_file).is_file():
            raise PreferenceSourceError(f"database {db_file} does not exist")
        scorer = config.scorer
        if scorer is not None:
            from reward.score import parse_scorer

            scorer = parse_scorer(scorer).name  # scores are stored under the absolute path
        pairs = pairs_from_db(store.open_store(db_file), scorer=scorer, run_id=config.run_id,
                              mode=config.pair_mode)
    require_pairs(pairs)
    return pairs


def prepare_pairs(config: PairSource, tokenizer, pairs: PairSet,
                  eval_pairs: PairSet | None = None
                  ) -> tuple[list[EncodedScoredPair], list[EncodedScoredPair], dict[str, int]]:
    """(train, held-out, dropped counts by reason). Without ``eval_pairs``, ``eval_fraction``
    of the prompts are held out."""
    limits = dict(max_prompt_tokens=config.max_prompt_tokens,
                  max_response_tokens=config.max_response_tokens)
    encoded, too_long = encode_scored_pairs(tokenizer, pairs.pairs, **limits)
    dropped = {**pairs.dropped, **too_long}
    if eval_pairs is not None:
        train = encoded
        held_out, held_too_long = encode_scored_pairs(tokenizer, eval_pairs.pairs, **limits)
        dropped.update({f"held-out {k}": v for k, v in held_too_long.items()})
    else:
        train_idx, held_idx = split_held_out([p.group for p in encoded], config.eval_fraction,
                                             config.seed)
        train, held_out = [encoded[i] for i in train_idx], [encoded[i] for i in held_idx]
    if not train:
        raise PreferenceSourceError(
            f"no training pairs left from {pairs.source} (dropped: "
            f"{', '.join(f'{n} {k}' for k, n in sorted(dropped.items()) if n) or 'none'})")
    return train, held_out, {k: v for k, v in dropped.items() if v}


def reference_logprobs(model, accelerator, pairs: list[EncodedScoredPair], *, batch_size: int,
                       pad_token_id: int, temperature: float) -> torch.Tensor:
    """``[N, 2]`` summed response log-probs (chosen, rejected) of π_t, computed once: batches
    are spread over the ranks and the results summed back, so every rank holds all of them."""
    out = torch.zeros(len(pairs), 2)
    if not pairs:
        return out
    order = sorted(range(len(pairs)), key=lambda i: pairs[i].length, reverse=True)
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    dummy = torch.zeros(len(pairs), 2)
    model.eval()
    with torch.no_grad():
        for index, real in spread(len(chunks), accelerator.num_processes,
                                   accelerator.process_index):
            chunk = chunks[index]
            batch = collate([pairs[i] for i in chunk], dummy[chunk], pad_token_id)
            logp = sequence_logprobs(model, batch.tokens.to(accelerator.device), temperature)
            if real:
                chosen, rejected = batch.split(logp.float().cpu())
                out[chunk] = torch.stack([chosen, rejected], dim=1)
    model.train()
    return accelerator.reduce(out.to(accelerator.device), reduction="sum").cpu()
