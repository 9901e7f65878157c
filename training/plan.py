"""Step planning and batching shared by the training recipes.

Batching is planned in whole optimizer steps. Each step takes one *global batch* of
``world × per_device × accumulation`` examples (pairs, conversations), cut into that many
micro-batches; which rank and which accumulation step runs a micro-batch does not change which
examples make up the step. So one process with accumulation, several processes, and one big
batch all see the same examples per step, and (with the loss normalised by the global batch)
compute the same update. Each epoch's batches are a function of (seed, epoch), so the data
position of a resumed run follows from the step number alone.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from data.preferences import PreferenceSourceError
from data.splits import held_out_groups

# How many global batches are sorted by length together: big enough that padding is small,
# small enough that step order stays random.
LENGTH_GROUP_BATCHES = 16


def split_held_out(examples: Sequence, fraction: float, seed: int) -> tuple[list, list]:
    """(train, held-out) of examples with a ``group`` attribute (the prompt's key):
    ``fraction`` of the groups (at least one when there are two or more and fraction > 0) go
    to held-out with all their examples. Deterministic in ``seed``."""
    held_out = held_out_groups((e.group for e in examples), fraction, seed)
    return ([e for e in examples if e.group not in held_out],
            [e for e in examples if e.group in held_out])


def global_batches(
    lengths: Sequence[int], global_batch_size: int, seed: int, epoch: int, min_size: int = 1
) -> list[list[int]]:
    """One epoch's global batches of example indices, length-grouped.

    Shuffles with (seed, epoch), sorts each run of ``LENGTH_GROUP_BATCHES`` global batches by
    length so examples of similar length share a batch, and shuffles the batch order. The last
    batch may be smaller; a last batch below ``min_size`` (fewer examples than micro-batches)
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


def steps_per_epoch(n_examples: int, global_batch_size: int, min_size: int) -> int:
    full, rest = divmod(n_examples, global_batch_size)
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


def spread(n_chunks: int, world: int, rank: int) -> Iterator[tuple[int, bool]]:
    """(chunk index, is real) for each forward this rank runs over ``n_chunks`` evaluation
    chunks: every rank runs the same number of forwards (ZeRO-3 gathers weights collectively),
    so a rank out of chunks repeats chunk 0 and discards the result."""
    for k in range(math.ceil(n_chunks / world)):
        index = k * world + rank
        yield (index, True) if index < n_chunks else (0, False)


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

    def epoch_and_position(self, step: int) -> tuple[int, int]:
        """(epoch, index of the global batch within it) of 0-based ``step``."""
        return divmod(step, self.steps_per_epoch)

    def check(self) -> None:
        assert self.global_batch_size == (self.world_size * self.per_device_batch_size
                                          * self.gradient_accumulation_steps)
        if self.train_pairs < self.micro_batches_per_step:
            raise PreferenceSourceError(
                f"only {self.train_pairs} training pairs for {self.micro_batches_per_step} "
                f"micro-batches per step ({self.world_size} processes × "
                f"{self.gradient_accumulation_steps} accumulation steps); add data or lower them"
            )

    def describe(self, unit: str = "pairs") -> str:
        return (f"{self.total_steps} steps of {self.global_batch_size} {unit} "
                f"({self.world_size} processes × {self.per_device_batch_size} {unit} × "
                f"{self.gradient_accumulation_steps} accumulation)")
