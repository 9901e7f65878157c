"""From preference pairs to padded tensors: tokenizing, the held-out split, length-grouped
batches and the ``PreferenceBatch`` container.

Batching is planned in whole optimizer steps. Each step takes one *global batch* of
``world × per_device × accumulation`` pairs, cut into that many micro-batches; which rank and
which accumulation step runs a micro-batch does not change which pairs make up the step. So one
process with accumulation, several processes, and one big batch all see the same pairs per
step, and (with the loss normalised by the global batch) compute the same update.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from data.chat import ChatTemplateError
from data.preferences import PreferencePair, PreferenceSourceError

# How many global batches are sorted by length together: big enough that padding is small,
# small enough that step order stays random.
LENGTH_GROUP_BATCHES = 16


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

    @property
    def length(self) -> int:
        """Padded length of this pair in a batch: both sides are padded to the same width."""
        return max(len(self.chosen_ids), len(self.rejected_ids))


def encode_pairs(
    tokenizer, pairs: Sequence[PreferencePair], max_length: int
) -> tuple[list[EncodedPair], int]:
    """Tokenizes every pair; returns those whose two sides fit in ``max_length`` tokens, and how
    many were dropped for being longer. Dropping (not truncating) keeps the read-out token on
    each response's real last token and both sides of a pair whole."""
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
                                   pair.prompt_key()))
    return encoded, too_long


def split_held_out(
    pairs: Sequence[EncodedPair], fraction: float, seed: int
) -> tuple[list[EncodedPair], list[EncodedPair]]:
    """(train, held-out): ``fraction`` of the prompts (at least one when there are two or
    more and fraction > 0) go to held-out with all their pairs. Deterministic in ``seed``."""
    if fraction <= 0:
        return list(pairs), []
    groups = sorted({p.group for p in pairs},
                    key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    n_eval = min(len(groups) - 1, max(1, round(fraction * len(groups))))
    held_out = set(groups[:n_eval])
    return ([p for p in pairs if p.group not in held_out],
            [p for p in pairs if p.group in held_out])


# --- step planning ------------------------------------------------------------------------

def global_batches(
    lengths: Sequence[int], global_batch_size: int, seed: int, epoch: int, min_size: int = 1
) -> list[list[int]]:
    """One epoch's global batches of pair indices, length-grouped.

    Shuffles with (seed, epoch), sorts each run of ``LENGTH_GROUP_BATCHES`` global batches by
    length so pairs of similar length share a batch, and shuffles the batch order. The last
    batch may be smaller; a last batch below ``min_size`` (fewer pairs than micro-batches)
    is left out of this epoch.
    """
    order = list(range(len(lengths)))
    rng = random.Random(f"{seed}:{epoch}")
    rng.shuffle(order)
    group = global_batch_size * LENGTH_GROUP_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), group):
        chunk = sorted(order[start:start + group], key=lambda i: lengths[i], reverse=True)
        batches += [chunk[i:i + global_batch_size] for i in range(0, len(chunk), global_batch_size)]
    # The short remainder of the last group is the only batch that can be small.
    if batches and len(batches[-1]) < min_size:
        batches.pop()
    rng.shuffle(batches)
    return batches


def steps_per_epoch(n_pairs: int, global_batch_size: int, min_size: int) -> int:
    full, rest = divmod(n_pairs, global_batch_size)
    return full + (1 if rest >= min_size else 0)


def micro_batches(global_batch: Sequence[int], lengths: Sequence[int], n: int) -> list[list[int]]:
    """Splits a global batch into ``n`` non-empty micro-batches of near-equal size, sorted by
    length so each is padded little. Micro-batch ``accumulation_step × world + rank`` belongs
    to that rank at that accumulation step."""
    ordered = sorted(global_batch, key=lambda i: lengths[i], reverse=True)
    if len(ordered) < n:
        raise ValueError(f"a global batch of {len(ordered)} pairs cannot fill {n} micro-batches")
    size, extra = divmod(len(ordered), n)
    out, start = [], 0
    for k in range(n):
        end = start + size + (1 if k < extra else 0)
        out.append(ordered[start:end])
        start = end
    return out


# --- tensors --------------------------------------------------------------------------------

@dataclass
class PreferenceBatch:
    """B pairs as one forward pass: the chosen sequences, then the rejected ones.

    input_ids, attention_mask: ``[2B, T]``, right-padded to the longest of all 2B sequences;
    rows ``0..B-1`` are the chosen responses and rows ``B..2B-1`` the rejected ones, pair i's
    in rows i and B+i. margin: ``[B]`` float (0 where none). is_tie: ``[B]`` bool.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    margin: torch.Tensor
    is_tie: torch.Tensor

    @property
    def num_pairs(self) -> int:
        return self.margin.shape[0]

    def split(self, rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[2B]`` rewards → (chosen ``[B]``, rejected ``[B]``)."""
        return rewards[: self.num_pairs], rewards[self.num_pairs:]

    def to(self, device) -> PreferenceBatch:
        return PreferenceBatch(self.input_ids.to(device), self.attention_mask.to(device),
                               self.margin.to(device), self.is_tie.to(device))


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
    )


def sequence_rewards(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``[N]`` float32 rewards: the model's score head read at each sequence's last token (the
    rightmost non-pad token, as ``AutoModelForSequenceClassification`` itself does)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    return logits[:, 0].float()


@dataclass
class StepPlan:
    """The batch arithmetic, computed once: every process derives the same plan."""

    train_pairs: int
    world_size: int
    per_device_batch_size: int
    gradient_accumulation_steps: int
    epochs: int
    max_steps: int | None

    @property
    def micro_batches_per_step(self) -> int:
        return self.world_size * self.gradient_accumulation_steps

    @property
    def global_batch_size(self) -> int:
        return self.micro_batches_per_step * self.per_device_batch_size

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.train_pairs, self.global_batch_size,
                               self.micro_batches_per_step)

    @property
    def total_steps(self) -> int:
        return self.max_steps or self.steps_per_epoch * self.epochs

    def check(self) -> None:
        assert self.global_batch_size == (self.world_size * self.per_device_batch_size
                                          * self.gradient_accumulation_steps)
        if self.train_pairs < self.micro_batches_per_step:
            raise PreferenceSourceError(
                f"only {self.train_pairs} training pairs for {self.micro_batches_per_step} "
                f"micro-batches per step ({self.world_size} processes × "
                f"{self.gradient_accumulation_steps} accumulation steps); add data or lower them"
            )
