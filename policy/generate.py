"""Generation recipe: sample k candidate responses per prompt and store them with their run.

Resumable: a run is identified by its settings (model, backend, k, sampling parameters, seed),
each prompt's k candidates are written in one transaction, and a rerun skips prompts that
already have all k. A killed job loses at most the batch it was sampling.

Scaling out: ``data_parallel_size`` engines in one invocation (one per GPU or tensor-parallel
group) share each batch, and this process stays the only writer. Beyond one machine, each node
runs its own invocation on a disjoint ``shard`` of the prompts into its own database, and
``data.merge`` brings the databases together.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace

from data import store
from data.errors import ConfigError
from data.merge import in_shard, parse_shard
from data.chat import DEFAULT_MAX_PROMPT_TOKENS, format_and_filter
from data.prompts import load_prompts
from training.models import DEFAULT_MODEL, is_default, load_tokenizer, resolve_model
from policy.sampling import (Sampler, SamplingConfig, check_parallel, make_sampler,
                             pick_backend)


@dataclass
class GenerateConfig:
    db: str = field(default_factory=store.default_db_path)
    """SQLite database to write to."""
    prompts: str | None = None
    """Prompt source (file, save_to_disk folder, Hub dataset id); None = the bundled set."""
    prompt_column: str = "prompt"
    """Column holding the prompt string or chat ``messages`` list."""
    split: str = "train"
    """Dataset split, for dataset folders and Hub ids."""
    limit: int | None = None
    """Use at most this many prompts from the source."""
    max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS
    """Prompts longer than this after chat formatting are dropped (and counted)."""
    model: str = DEFAULT_MODEL
    """``default`` (embedded SmolLM2-135M-Instruct), a local folder or a Hub id."""
    backend: str = "auto"
    """``vllm``, ``transformers``, or ``auto`` (vLLM when importable)."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """k, temperature, top_p, max_new_tokens, seed."""
    batch_size: int = 32
    """Prompts per engine per sampler call; a kill loses at most one call's prompts."""
    tensor_parallel_size: int = 1
    """GPUs one vLLM engine's model is sharded over (vLLM's ``tensor_parallel_size``)."""
    data_parallel_size: int = 1
    """Engines, each a whole model copy on its own GPUs (or its share of the CPU cores)."""
    shard: str | None = None
    """``i/n``: only the prompts of shard i (0 .. n-1) of n, split by prompt hash, so n
    machines can each sample a disjoint part of one source."""
    previous_model: str | None = None
    """An earlier policy that samples ``previous_count`` of each prompt's k candidates (the
    loop's people's verdict, new against previous); each candidate then records its policy."""
    previous_count: int = 0
    """Candidates per prompt from ``previous_model``, stored after ``model``'s."""

    def __post_init__(self):
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be at least 1, got {self.limit}")
        if self.max_prompt_tokens < 1:
            raise ConfigError(f"max_prompt_tokens must be at least 1, got {self.max_prompt_tokens}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.tensor_parallel_size < 1 or self.data_parallel_size < 1:
            raise ConfigError("tensor and data parallel sizes must be at least 1")
        if self.shard is not None:
            parse_shard(self.shard)
        if self.previous_count and not (self.previous_model
                                        and 0 < self.previous_count < self.sampling.k):
            raise ConfigError("previous_count needs previous_model and must leave the current "
                              f"policy at least one of the k = {self.sampling.k} candidates")


@dataclass
class GenerateSummary:
    run_id: int
    prompts_total: int
    """Prompts read from the source and kept by the filters."""
    prompts_skipped: int
    """Prompts that already had k candidates from this run."""
    prompts_done: int
    """Prompts sampled by this invocation."""
    candidates: int
    tokens: int
    seconds: float
    dropped_empty: int
    dropped_too_long: int
    duplicates: int
    """Candidates identical to an earlier candidate of the same prompt (stored, flagged)."""
    other_shards: int = 0
    """Prompts left to the other shards (``shard``)."""

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"run {self.run_id}: {self.prompts_done} prompts sampled "
            f"({self.prompts_skipped} already done, {self.dropped_too_long} too long, "
            f"{self.dropped_empty} empty"
            + (f", {self.other_shards} in other shards" if self.other_shards else "")
            + f"), {self.candidates} candidates, {self.tokens} tokens, "
            f"{self.tokens_per_second:.1f} tokens/s, {self.duplicates} duplicate candidates flagged"
        )


def run_generation(
    config: GenerateConfig, *, sampler: Sampler | None = None, progress: bool = True
) -> GenerateSummary:
    """Runs the recipe; ``sampler`` lets a caller reuse an engine that is already started."""
    from tqdm import tqdm

    # 1. Validate everything that can fail before writing anything.
    backend = sampler.name if sampler is not None else pick_backend(config.backend)
    if sampler is None:
        check_parallel(backend, config.tensor_parallel_size, config.data_parallel_size)
    store.check_writable(config.db)
    loaded = load_prompts(config.prompts, config.prompt_column, split=config.split,
                          limit=config.limit)
    model_path = resolve_model(config.model)
    tokenizer = load_tokenizer(model_path)
    formatted, dropped_too_long = format_and_filter(
        tokenizer, loaded.prompts, config.max_prompt_tokens
    )
    if not formatted:
        raise ConfigError(
            f"all {len(loaded.prompts)} prompts exceed --max-prompt-tokens "
            f"{config.max_prompt_tokens}; nothing to generate"
        )

    other_shards = 0
    if config.shard is not None:
        index, count = parse_shard(config.shard)
        kept = [f for f in formatted if in_shard(f.prompt.messages, index, count)]
        other_shards, formatted = len(formatted) - len(kept), kept

    # 2. Record prompts and the run; find what a previous invocation already finished.
    # Parallel sizes and shards are not settings of the run: the rows do not depend on them.
    db = store.open_store(config.db)
    settings = store.RunSettings(
        model=DEFAULT_MODEL if is_default(config.model) else model_path,
        backend=backend,
        k=config.sampling.k,
        temperature=config.sampling.temperature,
        top_p=config.sampling.top_p,
        max_new_tokens=config.sampling.max_new_tokens,
        seed=config.sampling.seed,
    )
    mix = _mix(db, config, settings)
    if mix is not None:
        settings = mix.settings
    prompt_ids = store.upsert_prompts(
        db, ((f.prompt.messages, f.prompt.source, f.prompt.source_id) for f in formatted)
    )
    run_id = store.get_or_create_run(db, settings)
    done = store.prompts_with_candidates(db, run_id, config.sampling.k)
    # The same prompt can appear twice in a source; sample it once.
    todo, seen = [], set(done)
    for prompt_id, item in zip(prompt_ids, formatted):
        if prompt_id not in seen:
            seen.add(prompt_id)
            todo.append((prompt_id, item))

    summary = GenerateSummary(
        run_id=run_id, prompts_total=len(formatted), prompts_skipped=len(formatted) - len(todo),
        prompts_done=0, candidates=0, tokens=0, seconds=0.0, dropped_empty=loaded.dropped_empty,
        dropped_too_long=dropped_too_long, duplicates=0, other_shards=other_shards,
    )
    if not todo:
        return summary

    # 3. Sample in batches; store each prompt's k candidates atomically as they arrive.
    own_sampler = sampler is None
    if own_sampler:
        sampler = make_sampler(backend, model_path, config.sampling,
                               tensor_parallel_size=config.tensor_parallel_size,
                               data_parallel_size=config.data_parallel_size)
    earlier = {} if mix is None else _sample_previous(config, mix, backend, todo)
    sampling = config.sampling if mix is None else mix.current_sampling
    step = config.batch_size * getattr(sampler, "data_parallel_size", 1)
    bar = tqdm(total=len(todo), unit="prompt", desc="generate", disable=not progress,
               file=sys.stderr)
    started = time.perf_counter()
    try:
        for start in range(0, len(todo), step):
            batch = todo[start:start + step]
            samples = sampler.generate([item.text for _, item in batch], sampling)
            for (prompt_id, _), prompt_samples in zip(batch, samples):
                policy_ids = None
                if mix is not None:
                    policy_ids = [mix.current_id] * len(prompt_samples)
                    prompt_samples = list(prompt_samples) + list(earlier[prompt_id])
                    policy_ids += [mix.previous_id] * config.previous_count
                rows = [store.CandidateIn(s.text, s.token_count, s.finish_reason)
                        for s in prompt_samples]
                store.add_candidates(db, prompt_id, run_id, rows, policy_ids=policy_ids)
                summary.candidates += len(rows)
                summary.tokens += sum(s.token_count for s in prompt_samples)
                summary.duplicates += sum(
                    d is not None for d in store.duplicate_targets([s.text for s in prompt_samples])
                )
            summary.prompts_done += len(batch)
            bar.update(len(batch))
            bar.set_postfix(tok_s=f"{summary.tokens / (time.perf_counter() - started):.0f}")
    finally:
        summary.seconds = time.perf_counter() - started
        bar.close()
        if own_sampler:
            sampler.close()
        db.close()
    return summary


# --- a round that mixes in the previous policy's answers ------------------------------------------

@dataclass(frozen=True)
class _Mix:
    settings: store.RunSettings
    """The run's settings, naming both policies (a mixed run is not the plain run)."""
    current_id: int
    previous_id: int
    previous_path: str
    current_sampling: SamplingConfig
    previous_sampling: SamplingConfig


def policy_name(model: str) -> str:
    """The name a model's candidates carry as a policy: as a run records its model."""
    return DEFAULT_MODEL if is_default(model) else resolve_model(model)


def _mix(db, config: GenerateConfig, settings: store.RunSettings) -> _Mix | None:
    if not config.previous_count:
        return None
    current, previous = settings.model, policy_name(config.previous_model)
    k, n = config.sampling.k, config.previous_count
    return _Mix(
        settings=replace(settings, model=f"{current} + {n} of {k} from {previous}"),
        current_id=store.get_or_create_policy(db, current, current),
        previous_id=store.get_or_create_policy(db, previous, previous),
        previous_path=resolve_model(config.previous_model),
        current_sampling=replace(config.sampling, k=k - n),
        # Its own seed stream: an unchanged policy must not repeat the current one's samples.
        previous_sampling=replace(config.sampling, k=n, seed=config.sampling.seed + 7919))


def _sample_previous(config: GenerateConfig, mix: _Mix, backend: str, todo):
    """The previous policy's candidates for every prompt still to do (prompt id -> samples),
    from an engine of its own that is closed before the current policy samples."""
    from data.chat import format_chat

    tokenizer = load_tokenizer(mix.previous_path)
    texts = [format_chat(tokenizer, item.prompt.messages) for _, item in todo]
    # Beside an engine already started for the current policy, take a modest share of a GPU.
    options = {"gpu_memory_utilization": 0.3} if backend == "vllm" else {}
    sampler = make_sampler(backend, mix.previous_path, mix.previous_sampling, **options)
    out = {}
    try:
        for start in range(0, len(todo), config.batch_size):
            batch = todo[start:start + config.batch_size]
            samples = sampler.generate(texts[start:start + config.batch_size],
                                       mix.previous_sampling)
            out.update((prompt_id, s) for (prompt_id, _), s in zip(batch, samples))
    finally:
        sampler.close()
    return out
