"""From preference pairs to padded tensors for the reward model: tokenizing conversations,
``EncodedPair`` and the ``PreferenceBatch`` container. Step planning, the held-out split and
length-grouped batches are the training layer's (``training.plan``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from data.chat import ChatTemplateError
from data.preferences import PreferencePair


def conversation_text(tokenizer, conversation: list[dict] | str) -> str:
    """A whole conversation as the reward model reads it: chat lists through the model's chat
    template (ending with the last response, no generation prompt); strings unchanged."""
    if isinstance(conversation, str):
        return conversation
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; "
            "use an instruction-tuned model or add a chat_template to its tokenizer_config.json"
        )
    return tokenizer.apply_chat_template(list(conversation), tokenize=False)


def tokenize_conversations(tokenizer, conversations: Sequence[list[dict] | str]) -> list[list[int]]:
    """Token ids per conversation. A chat template already writes any BOS token, so special
    tokens are added only to raw text."""
    chat = [i for i, c in enumerate(conversations) if not isinstance(c, str)]
    raw = [i for i, c in enumerate(conversations) if isinstance(c, str)]
    out: list[list[int]] = [[] for _ in conversations]
    for indices, add_special in ((chat, False), (raw, True)):
        if not indices:
            continue
        texts = [conversation_text(tokenizer, conversations[i]) for i in indices]
        ids = tokenizer(texts, add_special_tokens=add_special)["input_ids"]
        for i, seq in zip(indices, ids):
            out[i] = list(seq)
    return out


@dataclass(frozen=True)
class EncodedPair:
    chosen_ids: list[int]
    rejected_ids: list[int]
    margin: float
    tie: bool
    group: str
    """The prompt's key: pairs of one prompt stay on the same side of the held-out split."""
    weight: float = 1.0
    """The judging annotator's training weight (1.0 = unweighted)."""

    @property
    def length(self) -> int:
        """Padded length of this pair in a batch: both sides are padded to the same width."""
        return max(len(self.chosen_ids), len(self.rejected_ids))


def encode_pairs(
    tokenizer, pairs: Sequence[PreferencePair], max_length: int,
    weights: Sequence[float] | None = None,
) -> tuple[list[EncodedPair], int]:
    """Tokenizes every pair; returns those whose two sides fit in ``max_length`` tokens, and how
    many were dropped for being longer. Dropping (not truncating) keeps the read-out token on
    each response's real last token and both sides of a pair whole. ``weights`` (one per pair)
    go with the pairs; None weighs each 1.0."""
    conversations = []
    for pair in pairs:
        conversations += [pair.chosen_conversation(), pair.rejected_conversation()]
    ids = tokenize_conversations(tokenizer, conversations)
    encoded, too_long = [], 0
    for n, pair in enumerate(pairs):
        chosen, rejected = ids[2 * n], ids[2 * n + 1]
        if max(len(chosen), len(rejected)) > max_length:
            too_long += 1
            continue
        encoded.append(EncodedPair(chosen, rejected, pair.margin or 0.0, pair.tie,
                                   pair.prompt_key(), 1.0 if weights is None else weights[n]))
    return encoded, too_long


# --- tensors --------------------------------------------------------------------------------

@dataclass
class PreferenceBatch:
    """B pairs as one forward pass: the chosen sequences, then the rejected ones.

    input_ids, attention_mask: ``[2B, T]``, right-padded to the longest of all 2B sequences;
    rows ``0..B-1`` are the chosen responses and rows ``B..2B-1`` the rejected ones, pair i's
    in rows i and B+i. margin: ``[B]`` float (0 where none). is_tie: ``[B]`` bool.
    weight: ``[B]`` float, each pair's training weight (1.0 = unweighted).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    margin: torch.Tensor
    is_tie: torch.Tensor
    weight: torch.Tensor | None = None

    @property
    def num_pairs(self) -> int:
        return self.margin.shape[0]

    def split(self, rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[2B]`` rewards → (chosen ``[B]``, rejected ``[B]``)."""
        return rewards[: self.num_pairs], rewards[self.num_pairs:]

    def to(self, device) -> PreferenceBatch:
        return PreferenceBatch(self.input_ids.to(device), self.attention_mask.to(device),
                               self.margin.to(device), self.is_tie.to(device),
                               None if self.weight is None else self.weight.to(device))


def pad_sequences(sequences: Sequence[Sequence[int]], pad_token_id: int,
                  side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) ``[N, longest]``: dynamic padding, never to a fixed width."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(0, len(seq)) if side == "right" else slice(width - len(seq), width)
        input_ids[row, span] = torch.tensor(list(seq), dtype=torch.long)
        attention_mask[row, span] = 1
    return input_ids, attention_mask


def collate(pairs: Sequence[EncodedPair], pad_token_id: int) -> PreferenceBatch:
    sequences = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
    input_ids, attention_mask = pad_sequences(sequences, pad_token_id)
    return PreferenceBatch(
        input_ids, attention_mask,
        margin=torch.tensor([p.margin for p in pairs], dtype=torch.float32),
        is_tie=torch.tensor([p.tie for p in pairs], dtype=torch.bool),
        weight=torch.tensor([p.weight for p in pairs], dtype=torch.float32),
    )


def sequence_rewards(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``[N]`` float32 rewards: the model's score head read at each sequence's last token (the
    rightmost non-pad token, as ``AutoModelForSequenceClassification`` itself does)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    return logits[:, 0].float()


# --- whole rankings (the listwise objective) ------------------------------------------------

@dataclass(frozen=True)
class EncodedRanking:
    """One vote's ranking, tokenized: each candidate's whole conversation."""

    sequences: list[list[int]]
    ranks: list[int]
    """Aligned with ``sequences``; 1 = best, equal = tie."""
    weight: float
    group: str
    """The prompt's key: rankings of one prompt stay on the same side of the held-out split."""

    @property
    def length(self) -> int:
        """Padded width of this ranking's sequences in a batch."""
        return max(len(s) for s in self.sequences)

    @property
    def size(self) -> int:
        return len(self.sequences)


def encode_rankings(tokenizer, groups, max_length: int) -> tuple[list[EncodedRanking], int]:
    """Tokenizes each ``data.scored_pairs.RankedGroup`` (prompt + each candidate as one
    conversation); returns those whose every candidate fits ``max_length`` tokens, and how many
    rankings were dropped for a longer one (never truncated, as for pairs)."""
    conversations, spans = [], []
    for group in groups:
        start = len(conversations)
        for text in group.texts:
            # As the database's pairs are read: the prompt, then the response as one turn.
            conversations.append(group.prompt + text if isinstance(group.prompt, str) else
                                 [*group.prompt, {"role": "assistant", "content": text}])
        spans.append((start, len(conversations)))
    ids = tokenize_conversations(tokenizer, conversations)
    encoded, too_long = [], 0
    for group, (start, end) in zip(groups, spans):
        sequences = ids[start:end]
        if max(len(s) for s in sequences) > max_length:
            too_long += 1
            continue
        encoded.append(EncodedRanking(sequences, list(group.ranks), group.weight,
                                      group.prompt_key()))
    return encoded, too_long


@dataclass
class RankingBatch:
    """B rankings of up to K candidates as one forward pass over their N = Σ kᵦ sequences.

    input_ids, attention_mask: ``[N, T]``, right-padded, ranking b's candidates in consecutive
    rows. index: ``[B, K]`` long, the row of ranking b's k-th candidate (0 on padding).
    ranks: ``[B, K]`` long (1 = best, equal = tie; padding holds a large rank). candidate_mask:
    ``[B, K]`` bool, True on real candidates (rankings of fewer than K are padded).
    weight: ``[B]`` float, each ranking's training weight (1.0 = unweighted).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    index: torch.Tensor
    ranks: torch.Tensor
    candidate_mask: torch.Tensor
    weight: torch.Tensor

    @property
    def num_rankings(self) -> int:
        return self.ranks.shape[0]

    def gather(self, per_sequence: torch.Tensor) -> torch.Tensor:
        """``[N]`` per-sequence values → ``[B, K]`` (padding gets sequence 0's value, to be
        masked)."""
        return per_sequence[self.index]

    def to(self, device) -> RankingBatch:
        return RankingBatch(*(t.to(device) for t in (
            self.input_ids, self.attention_mask, self.index, self.ranks, self.candidate_mask,
            self.weight)))


def collate_rankings(rankings: Sequence[EncodedRanking], pad_token_id: int) -> RankingBatch:
    from training.listwise import padded_ranks, ranking_layout

    input_ids, attention_mask = pad_sequences(
        [s for r in rankings for s in r.sequences], pad_token_id)
    index, mask = ranking_layout([r.size for r in rankings])
    return RankingBatch(input_ids, attention_mask, index,
                        padded_ranks([r.ranks for r in rankings], index.shape[1]), mask,
                        torch.tensor([r.weight for r in rankings], dtype=torch.float32))
