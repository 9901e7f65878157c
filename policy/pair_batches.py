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
    RankedGroup,
    RankingSet,
    ScoredPair,
    filter_by_length,
    require_pairs,
    split_held_out,
)
from data.preferences import PreferenceSourceError
from policy.logprobs import TokenBatch, pack, sequence_logprobs
from training.listwise import with_normalised_weights
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
    objective: str
    annotator_weights: str


@dataclass(frozen=True)
class EncodedScoredPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    """Response tokens, ending with EOS."""
    rejected_ids: list[int]
    reward_chosen: float
    reward_rejected: float
    group: str
    weight: float = 1.0
    """Training weight (its votes' annotators', mean 1 over the training set)."""

    @property
    def length(self) -> int:
        """Padded width of this pair in a batch."""
        return len(self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids))


@dataclass
class PairBatch:
    """B pairs as one forward pass.

    tokens: ``[2B, T]``, rows 0..B−1 prompt+chosen and B..2B−1 prompt+rejected (pair i in rows
    i and B+i). ref_logp_chosen, ref_logp_rejected, reward_chosen, reward_rejected: ``[B]``.
    weight: ``[B]`` each pair's training weight (None: all 1).
    """

    tokens: TokenBatch
    ref_logp_chosen: torch.Tensor
    ref_logp_rejected: torch.Tensor
    reward_chosen: torch.Tensor
    reward_rejected: torch.Tensor
    weight: torch.Tensor | None = None

    @property
    def num_pairs(self) -> int:
        return self.reward_chosen.shape[0]

    def split(self, per_sequence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return per_sequence[: self.num_pairs], per_sequence[self.num_pairs:]

    def to(self, device) -> PairBatch:
        return PairBatch(self.tokens.to(device), self.ref_logp_chosen.to(device),
                          self.ref_logp_rejected.to(device), self.reward_chosen.to(device),
                          self.reward_rejected.to(device),
                          None if self.weight is None else self.weight.to(device))


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
                                 pairs[i].reward_rejected, pairs[i].prompt_key(),
                                 pairs[i].weight) for i in kept]
    return encoded, dropped


def collate(pairs: list[EncodedScoredPair], ref_logps: torch.Tensor, pad_token_id: int,
            *, side: str = "right", width: int | None = None) -> PairBatch:
    """ref_logps: ``[len(pairs), 2]`` (chosen, rejected) for these pairs. Rankings
    (``EncodedScoredRanking``) give a ``RankingPairBatch`` instead (ref_logps ``[B, ≥K]``)."""
    if pairs and isinstance(pairs[0], EncodedScoredRanking):
        return collate_rankings(pairs, ref_logps, pad_token_id, side=side, width=width)
    tokens = pack([p.prompt_ids for p in pairs] * 2,
                  [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs],
                  pad_token_id, side=side, width=width)
    return PairBatch(tokens, ref_logps[:, 0].float(), ref_logps[:, 1].float(),
                      torch.tensor([p.reward_chosen for p in pairs], dtype=torch.float32),
                      torch.tensor([p.reward_rejected for p in pairs], dtype=torch.float32),
                      torch.tensor([p.weight for p in pairs], dtype=torch.float32))


# --- whole rankings (listwise objectives) -----------------------------------------------------

@dataclass(frozen=True)
class EncodedScoredRanking:
    """One vote's ranking of a prompt's sampled responses, tokenized."""

    prompt_ids: list[int]
    response_ids: list[list[int]]
    """Each response's tokens, ending with EOS."""
    ranks: list[int]
    """1 = best, equal = tie."""
    rewards: list[float]
    """The vote's own rank-derived rewards (``data.scored_pairs.ranks_to_rewards``)."""
    group: str
    weight: float = 1.0

    @property
    def length(self) -> int:
        """Padded width of this ranking's sequences in a batch."""
        return len(self.prompt_ids) + max(len(r) for r in self.response_ids)

    @property
    def size(self) -> int:
        return len(self.response_ids)


@dataclass
class RankingPairBatch:
    """B rankings of up to K responses as one forward pass over their N = Σ kᵦ sequences.

    tokens: ``[N, T]``, ranking b's prompt+response sequences in consecutive rows. index
    ``[B, K]`` long: the row of ranking b's k-th response (0 on padding). ranks ``[B, K]`` long
    (1 = best; padding holds a large rank); candidate_mask ``[B, K]`` bool; ref_logp, rewards
    ``[B, K]`` float (0 on padding); weight ``[B]``.
    """

    tokens: TokenBatch
    index: torch.Tensor
    ranks: torch.Tensor
    candidate_mask: torch.Tensor
    ref_logp: torch.Tensor
    rewards: torch.Tensor
    weight: torch.Tensor

    @property
    def num_pairs(self) -> int:
        """The examples of the batch: rankings."""
        return self.ranks.shape[0]

    def gather(self, per_sequence: torch.Tensor) -> torch.Tensor:
        """``[N]`` → ``[B, K]`` (padding holds sequence 0's value: mask it)."""
        return per_sequence[self.index]

    def to(self, device) -> RankingPairBatch:
        return RankingPairBatch(self.tokens.to(device), *(t.to(device) for t in (
            self.index, self.ranks, self.candidate_mask, self.ref_logp, self.rewards,
            self.weight)))


def collate_rankings(rankings: list[EncodedScoredRanking], ref_logps: torch.Tensor,
                     pad_token_id: int, *, side: str = "right",
                     width: int | None = None) -> RankingPairBatch:
    """ref_logps: ``[B, ≥K]`` the starting policy's log-probs of each ranking's responses."""
    from training.listwise import padded_ranks, ranking_layout

    tokens = pack([r.prompt_ids for r in rankings for _ in r.response_ids],
                  [x for r in rankings for x in r.response_ids], pad_token_id, side=side,
                  width=width)
    index, mask = ranking_layout([r.size for r in rankings])
    k = index.shape[1]
    rewards = torch.zeros(len(rankings), k)
    for b, r in enumerate(rankings):
        rewards[b, :r.size] = torch.tensor(r.rewards, dtype=torch.float32)
    ref = ref_logps[:, :k].float() * mask
    return RankingPairBatch(tokens, index, padded_ranks([r.ranks for r in rankings], k), mask,
                            ref, rewards,
                            torch.tensor([r.weight for r in rankings], dtype=torch.float32))


def is_sqlite_file(source: str) -> bool:
    """True for an SQLite database (the app's store), recognised by its header."""
    path = Path(source).expanduser()
    if not path.is_file():
        return False
    with path.open("rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


def read_pairs(config: PairSource) -> PairSet | RankingSet:
    """The pairs, or (``objective="listwise"``) each label vote's ranking, with annotator
    weights when asked for."""
    from data.scored_pairs import (
        pairs_from_db,
        pairs_from_file,
        rankings_from_db,
        read_annotator_weights,
        with_weights,
    )

    database_only = config.objective != "pairwise" or config.annotator_weights != "none"
    if database_only and config.scorer is not None:
        raise ConfigError("the listwise objective and annotator weights read human rankings: "
                          "unset --scorer")
    if config.data and not is_sqlite_file(config.data):
        if database_only:
            raise ConfigError("the listwise objective and annotator weights read the app's "
                              "database, not a preference file")
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
        db = store.open_store(db_file)
        weights = read_annotator_weights(db, config.annotator_weights)
        if config.objective == "listwise":
            pairs = rankings_from_db(db, run_id=config.run_id)
            if weights is not None:
                pairs = with_weights(pairs, weights)
        else:
            pairs = pairs_from_db(db, scorer=scorer, run_id=config.run_id,
                                  mode=config.pair_mode, weights=weights)
    require_pairs(pairs)
    return pairs


def encode_scored_rankings(tokenizer, groups: list[RankedGroup], *, max_prompt_tokens: int,
                           max_response_tokens: int
                           ) -> tuple[list[EncodedScoredRanking], dict[str, int]]:
    """Tokenized rankings; one with a too-long prompt or response is dropped whole (counted)."""
    prompts = prompt_token_ids(tokenizer, [g.prompt for g in groups])
    responses = response_token_ids(tokenizer, [t for g in groups for t in g.texts])
    encoded, dropped, at = [], {}, 0
    for group, prompt in zip(groups, prompts):
        mine = responses[at:at + len(group.texts)]
        at += len(group.texts)
        if len(prompt) > max_prompt_tokens:
            reason = "rankings with a prompt too long"
        elif max(len(r) for r in mine) > max_response_tokens:
            reason = "rankings with a response too long"
        else:
            encoded.append(EncodedScoredRanking(prompt, mine, list(group.ranks),
                                                list(group.rewards), group.prompt_key(),
                                                group.weight))
            continue
        dropped[reason] = dropped.get(reason, 0) + 1
    return encoded, dropped


def prepare_pairs(config: PairSource, tokenizer, pairs: PairSet | RankingSet,
                  eval_pairs: PairSet | None = None
                  ) -> tuple[list[EncodedScoredPair], list[EncodedScoredPair], dict[str, int]]:
    """(train, held-out, dropped counts by reason). Without ``eval_pairs``, ``eval_fraction``
    of the prompts are held out. Rankings give ``EncodedScoredRanking``s, weights rescaled
    to mean 1 over the training examples."""
    train, held_out, dropped = _prepare(config, tokenizer, pairs, eval_pairs)
    return with_normalised_weights(train), held_out, dropped


def _prepare(config: PairSource, tokenizer, pairs, eval_pairs):
    limits = dict(max_prompt_tokens=config.max_prompt_tokens,
                  max_response_tokens=config.max_response_tokens)
    if isinstance(pairs, RankingSet):
        if eval_pairs is not None:
            raise ConfigError("the listwise objective holds out prompts of the database")
        encoded, too_long = encode_scored_rankings(tokenizer, pairs.groups, **limits)
        dropped = {**pairs.dropped, **too_long}
        train_idx, held_idx = split_held_out([p.group for p in encoded], config.eval_fraction,
                                             config.seed)
        train, held_out = [encoded[i] for i in train_idx], [encoded[i] for i in held_idx]
        if not train:
            raise PreferenceSourceError(f"no training rankings left from {pairs.source} "
                                        f"(dropped: {pairs.describe_drops()})")
        return train, held_out, {k: v for k, v in dropped.items() if v}
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
    are spread over the ranks and the results summed back, so every rank holds all of them.
    Rankings give ``[N, K]`` (K: the most responses in one; 0 on padding)."""
    rankings = bool(pairs) and isinstance(pairs[0], EncodedScoredRanking)
    width = max(p.size for p in pairs) if rankings else 2
    out = torch.zeros(len(pairs), width)
    if not pairs:
        return out
    order = sorted(range(len(pairs)), key=lambda i: pairs[i].length, reverse=True)
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    dummy = torch.zeros(len(pairs), width)
    model.eval()
    with torch.no_grad():
        for index, real in spread(len(chunks), accelerator.num_processes,
                                   accelerator.process_index):
            chunk = chunks[index]
            batch = collate([pairs[i] for i in chunk], dummy[chunk], pad_token_id)
            logp = sequence_logprobs(model, batch.tokens.to(accelerator.device), temperature)
            if real and rankings:
                values = batch.gather(logp.float().cpu()) * batch.candidate_mask
                out[chunk, :values.shape[1]] = values
            elif real:
                chosen, rejected = batch.split(logp.float().cpu())
                out[chunk] = torch.stack([chosen, rejected], dim=1)
    model.train()
    return accelerator.reduce(out.to(accelerator.device), reduction="sum").cpu()
