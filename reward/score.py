"""One scoring API for both kinds of reward model.

    scorer = load_scorer("bt:runs/rm")            # or "armorm:/models/ArmoRM-Llama3-8B-v0.1"
    scorer.score([[{"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": "Hello!"}]])        # -> [0.73]

A conversation is a chat message list ending with the reply to score (formatted with the
model's chat template) or a string of already formatted text. Conversations are scored in
batches of similar length with dynamic padding, and returned in the order given. One longer
than ``max_length`` tokens keeps its last ``max_length`` tokens (the reply and the end of the
prompt, where both kinds of model read) and is counted in ``truncated``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from data.errors import ConfigError
from training.models import ModelNotFoundError

KINDS = ("bt", "armorm")
DEFAULT_MAX_LENGTH = 4096


class ScorerSpecError(ConfigError):
    """A ``--scorer`` value that names no usable reward model."""


@dataclass(frozen=True)
class ScorerSpec:
    kind: str
    """``bt`` (a one-label sequence classifier) or ``armorm``."""
    path: str
    """Absolute path of the model folder."""

    @property
    def name(self) -> str:
        """How scores from this model are labelled in the store."""
        return f"{self.kind}:{self.path}"


@dataclass(frozen=True)
class Scored:
    score: float
    objectives: dict[str, float] | None = None
    """ArmoRM's per-objective rewards, when asked for."""


def parse_scorer(spec: str) -> ScorerSpec:
    """``bt:DIR``, ``armorm:DIR``, or a bare ``DIR`` whose config says which kind it is."""
    kind, sep, rest = spec.partition(":")
    if sep and kind in KINDS:
        path = Path(rest).expanduser()
    elif sep and not Path(spec).exists() and "/" not in kind:
        raise ScorerSpecError(f"unknown scorer kind {kind!r} in {spec!r}; use bt:DIR or armorm:DIR")
    else:
        kind, path = "", Path(spec).expanduser()
    if not (path / "config.json").is_file():
        raise ScorerSpecError(f"reward model folder {path} does not exist or has no config.json")
    config = json.loads((path / "config.json").read_text())
    from reward.armorm import ARCHITECTURE

    is_armorm = ARCHITECTURE in (config.get("architectures") or [])
    if not kind:
        kind = "armorm" if is_armorm else "bt"
    if kind == "armorm" and not is_armorm:
        raise ScorerSpecError(f"{path} is not an ArmoRM checkpoint (architectures: "
                              f"{config.get('architectures')})")
    if kind == "bt" and (is_armorm or len(config.get("id2label") or {}) != 1):
        raise ScorerSpecError(f"{path} is not a one-label reward model; train one with "
                              "`rankloop train reward`, or use armorm:DIR for ArmoRM")
    return ScorerSpec(kind, str(path.resolve()))


class RewardScorer:
    """A loaded reward model with its tokenizer; see the module docstring."""

    def __init__(self, spec: ScorerSpec, model, tokenizer, *, max_length: int = DEFAULT_MAX_LENGTH):
        self.spec = spec
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.truncated = 0
        """Conversations cut to ``max_length`` since this scorer was loaded."""

    @property
    def name(self) -> str:
        return self.spec.name

    def score(self, conversations: Sequence[list[dict] | str], *,
              batch_size: int = 8) -> list[float]:
        return [s.score for s in self.score_detailed(conversations, batch_size=batch_size,
                                                     objectives=False)]

    def score_detailed(self, conversations: Sequence[list[dict] | str], *, batch_size: int = 8,
                       objectives: bool = True) -> list[Scored]:
        """Scores plus, for ArmoRM when ``objectives``, the per-objective rewards."""
        import torch

        from reward.batches import pad_sequences, sequence_rewards, tokenize_conversations

        for n, conversation in enumerate(conversations):
            if not isinstance(conversation, str) and (
                    not conversation or conversation[-1].get("role") != "assistant"):
                raise ConfigError(f"conversation {n + 1} must end with the assistant reply to score")
        ids = tokenize_conversations(self.tokenizer, list(conversations))
        for n, seq in enumerate(ids):
            if len(seq) > self.max_length:
                ids[n] = seq[-self.max_length:]
                self.truncated += 1
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
        results: list[Scored | None] = [None] * len(ids)
        device = next(self.model.parameters()).device
        names = None
        if self.spec.kind == "armorm":
            from reward.armorm import objective_names

            names = objective_names(self.model.num_objectives)
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                input_ids, attention_mask = pad_sequences([ids[i] for i in chunk],
                                                          self.tokenizer.pad_token_id)
                input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
                if self.spec.kind == "armorm":
                    out = self.model(input_ids=input_ids, attention_mask=attention_mask)
                    scores = out.score.float().cpu().tolist()
                    per_objective = out.rewards.float().cpu().tolist()
                    for i, s, r in zip(chunk, scores, per_objective):
                        results[i] = Scored(s, dict(zip(names, r)) if objectives else None)
                else:
                    scores = sequence_rewards(self.model, input_ids, attention_mask).cpu().tolist()
                    for i, s in zip(chunk, scores):
                        results[i] = Scored(s)
        return results


def load_scorer(spec: str | ScorerSpec, *, device: str | None = None,
                max_length: int = DEFAULT_MAX_LENGTH, dtype=None) -> RewardScorer:
    """Loads a ``bt:DIR`` or ``armorm:DIR`` reward model (bf16 on a GPU, else fp32)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from reward.armorm import GATING_PATTERN_TEXT, LlamaForRewardModelWithGating
    from reward.modeling import load_reward_tokenizer

    spec = spec if isinstance(spec, ScorerSpec) else parse_scorer(spec)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    tokenizer = load_reward_tokenizer(spec.path)
    try:
        if spec.kind == "armorm":
            model = LlamaForRewardModelWithGating.from_pretrained(spec.path, dtype=dtype)
            pattern = tokenizer.encode(GATING_PATTERN_TEXT, add_special_tokens=False)
            if not getattr(model.config, "gating_token_pattern", None):
                model.config.gating_token_pattern = pattern
        else:
            model = AutoModelForSequenceClassification.from_pretrained(spec.path, dtype=dtype)
            if model.config.pad_token_id is None:
                model.config.pad_token_id = tokenizer.pad_token_id
    except OSError as exc:
        raise ModelNotFoundError(f"cannot load reward model {spec.path}: "
                                 f"{str(exc).strip().splitlines()[0]}") from None
    return RewardScorer(spec, model.to(device), tokenizer, max_length=max_length)


# ---------------------------------------------------------------------------------------------
# Scoring a database's candidates, in one process or one per GPU under `accelerate launch`.
# ---------------------------------------------------------------------------------------------

@dataclass
class ScoreConfig:
    db: str
    """The database whose candidates are scored; scores go to its ``model_scores``."""
    scorer: str
    """``bt:DIR``, ``armorm:DIR`` or a bare reward model folder."""
    run_id: int | None = None
    """Only candidates of this generation run; None = all."""
    rescore: bool = False
    """Score candidates this scorer already scored again."""
    batch_size: int = 8
    """Conversations per forward pass, per process."""
    max_length: int = DEFAULT_MAX_LENGTH
    """Longer conversations keep their last this many tokens."""


@dataclass
class ScoreSummary:
    scorer: str
    candidates: int
    """Scores written (0 when nothing was left to score)."""
    processes: int
    seconds: float
    """From every process having its model loaded to the scores committed."""
    truncated: int
    """Conversations cut to ``max_length`` tokens, over all processes."""
    main_process: bool = True

    @property
    def per_second(self) -> float:
        return self.candidates / self.seconds if self.seconds > 0 else 0.0


def split_by_length(lengths: dict[int, int], parts: int) -> list[list[int]]:
    """Ids split into ``parts`` shares of about equal total length: longest first, each to the
    share with the least so far. Each share is a list of ids, longest first."""
    import heapq

    shares: list[list[int]] = [[] for _ in range(parts)]
    heap = [(0, part) for part in range(parts)]
    for cid in sorted(lengths, key=lambda c: (-lengths[c], c)):
        total, part = heapq.heappop(heap)
        shares[part].append(cid)
        heapq.heappush(heap, (total + lengths[cid], part))
    return shares


def score_candidates(config: ScoreConfig, *, progress: bool = False) -> ScoreSummary:
    """Scores the database's unscored candidates (every candidate with ``rescore``).

    Under ``accelerate launch`` each process loads the reward model on its own device and
    scores a share of the candidates, split by length so the shares take about the same time;
    the main process gathers every score and writes them in one transaction. A run killed
    before that commit leaves no scores behind, and a rerun scores whatever is missing.
    """
    import time

    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list, gather_object

    from data import store

    import torch

    spec = parse_scorer(config.scorer)  # every process fails alike on a bad --scorer
    # cpu=True lets processes without a GPU form a gloo group (accelerate's MULTI_CPU).
    state = PartialState(cpu=not torch.cuda.is_available())
    world, rank = state.num_processes, state.process_index

    # 1. The main process picks the candidates and splits them; the others get their ids.
    shares: list = [None]
    if state.is_main_process:
        db = store.open_store(config.db)
        lengths = store.candidate_lengths(db, spec.name, run_id=config.run_id,
                                          rescore=config.rescore)
        db.close()
        shares = [split_by_length(lengths, world)]
    if world > 1:
        broadcast_object_list(shares)
    mine = shares[0][rank]
    if not any(shares[0]):
        return ScoreSummary(spec.name, 0, world, 0.0, 0, state.is_main_process)

    # 2. Each process scores its share on its own device.
    db = store.connect(config.db)
    todo = store.candidates_by_id(db, mine)
    db.close()
    scorer = load_scorer(spec, device=str(state.device), max_length=config.max_length)
    state.wait_for_everyone()  # the time below is scoring and writing, not loading
    started = time.perf_counter()
    results = []
    if todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="candidate", desc="score",
                   disable=not (progress and state.is_main_process))
        step = max(config.batch_size * 16, 256)
        for start in range(0, len(todo), step):
            part = todo[start:start + step]
            scored = scorer.score_detailed(
                [c.messages + [{"role": "assistant", "content": c.text}] for c in part],
                batch_size=config.batch_size)
            results += [(c.candidate_id, s.score, s.objectives) for c, s in zip(part, scored)]
            bar.update(len(part))
        bar.close()

    # 3. Every score to the main process, which writes them all in one transaction.
    truncated = scorer.truncated
    if world > 1:
        results = gather_object(results)
        truncated = sum(gather_object([truncated]))
    written = 0
    if state.is_main_process:
        db = store.open_store(config.db)
        written = store.put_model_scores(db, (store.ModelScore(cid, spec.name, score, objectives)
                                              for cid, score, objectives in results))
        db.close()
    state.wait_for_everyone()
    return ScoreSummary(spec.name, written, world, time.perf_counter() - started, truncated,
                        state.is_main_process)
