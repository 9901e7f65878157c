"""Export: the app's votes as a Hugging Face dataset, on disk or on the Hub.

Two configurations, each a ``DatasetDict`` with ``train``/``test`` splits (split by prompt, so
every row of a prompt lands in one split):

``default`` — preference pairs in TRL's format, loadable by ``RewardTrainer``, ``DPOTrainer``
and ``rankloop train reward --data`` unchanged:

- ``prompt``, ``chosen``, ``rejected``: conversational (``prompt`` the chat messages, ``chosen``
  and ``rejected`` one assistant message each) or standard (``prompt`` rendered with a model's
  chat template ending where the reply starts, ``chosen``/``rejected`` the reply texts).
- ``score_chosen``, ``score_rejected``: each response's score *within its ranking*: the share
  of the other responses in that ranking it beats, a tie counting half (so 1.0 = best of all,
  0.0 = worst; a demonstration beats every candidate and scores 1.0; the candidates of an
  unranked "all bad" submission tie among themselves). ``margin`` = score_chosen −
  score_rejected, in [0, 1], 0 for ties. TRL's RewardTrainer and RankLoop's reward trainer
  both read ``margin`` (loss −log σ(r_c − r_r − margin)).
- ``annotator``: who made this judgment; ``annotators``: everyone who judged this pair of
  responses; ``agreement``: the share of those judgments that match this row's (prefer the
  same side, or both tie). It is null when only one annotator judged the pair.
- ``tie``, ``source_run`` (the generation run of the ranked candidates),
  ``chosen_is_demonstration``, and ids linking back to the raw rankings (``ranking_id``,
  ``prompt_id``, ``chosen_id``, ``rejected_id``).

Every judgment is its own row: an item ranked by three annotators gives three rows per pair,
as ``rankloop train reward`` counts them. ``pairs="all"`` expands each ranking into all its
k(k−1)/2 pairs plus k demonstration pairs (``data.rankings.ranking_to_pairs``);
``pairs="best-worst"`` keeps every response at the best rank (the demonstration when there is
one) against every response at the worst rank. Tied pairs are left out unless
``ties="include"``, because TRL's trainers have no notion of a tie and would learn an arbitrary
order; the raw configuration keeps them. ``min_agreement`` keeps rows whose ``agreement`` is at
least that, which drops pairs judged by one annotator (including demonstration pairs). Rankings
of gold items are annotator checks, not labels: they are only in the raw configuration.

``rankings`` — one row per submission, skips included: the annotator, the prompt, candidate
ids and texts in the order shown, ranks, tie/all-bad/skip flags, rationale, demonstration,
times. ``rankings_from_rows`` reads it back into the records the export was made from.

Revisions: an annotator may revise a submission; the revision is a new row whose
``supersedes`` names the row it replaces (``data.revisions``). The ``rankings`` configuration
keeps the whole history, each replaced row with ``superseded_by`` set; preference pairs, the
agreement figures and the card's counts come from the latest versions only.

Model suggestions: ``suggestion_accepted`` is true when the annotator submitted the ranking
pre-filled from a reward model's scores unchanged, false when they changed it, null when no
suggestion was shown (``data.suggestions``); both configurations carry it, and ``rankings``
also the ``suggested_ranks`` and their ``suggestion_scorer``.

Who gave it: both configurations carry each item's ``item_status`` (``unanimous``,
``adjudicated`` or ``unresolved``, ``data.adjudication``) and the annotator's reliability
weight (``annotator_weight``, ``data.reliability``); ``rankings`` also ``active_seconds``, the
fitted ``annotator_temperature``, the item's ``adjudication_id`` and whether it ``overruled``
the vote.

Annotators appear as stable pseudonyms (``annotator-<user id>``) unless ``keep_annotator_names``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from data.adjudication import item_statuses
from data.errors import ConfigError
from data.rankings import RankedPair, ranking_to_pairs
from data.reliability import fit_reliability
from data.splits import held_out_groups
from data.votes import LABEL_RANKINGS, RankingRecord, labels, latest, read_rankings

FORMATS = ("conversational", "standard")
PAIR_MODES = ("all", "best-worst")
TIES = ("exclude", "include")
SPLITS = ("train", "test")
PREFERENCES, RANKINGS = "default", "rankings"
# Folder names inside an export; the Hub repository holds README.md and parquet/ only.
CONFIG_FOLDERS = {PREFERENCES: "preferences", RANKINGS: "rankings"}
SFT_SOURCES = ("demonstrations", "chosen")

DROP_TIE = "ties (--ties exclude)"
DROP_IDENTICAL = "identical texts"
DROP_SINGLE = "judged by one annotator (--min-agreement)"
DROP_DISAGREED = "agreement below --min-agreement"


class ExportError(ConfigError):
    """An export that cannot be made, with a message meant for the user."""


@dataclass(frozen=True)
class ExportConfig:
    format: str = "conversational"
    """``conversational`` (chat messages) or ``standard`` (chat-template text; needs a tokenizer)."""
    pairs: str = "all"
    """``all`` pairs of each ranking, or ``best-worst`` (best rank against worst rank)."""
    ties: str = "exclude"
    """``exclude`` leaves tied pairs out of the preference configuration; ``include`` keeps
    them with ``tie=True`` and ``margin=0``."""
    min_agreement: float | None = None
    """Keep only rows whose share of agreeing judgments is at least this (None keeps all)."""
    keep_annotator_names: bool = False
    """Export user names instead of ``annotator-<id>`` pseudonyms."""
    test_fraction: float = 0.1
    """Share of prompts in the ``test`` split (at least one prompt when there are two)."""
    seed: int = 0
    """Chooses which prompts are held out."""
    license: str = "other"
    """License field of the dataset card (a Hub license id such as ``cc-by-4.0``)."""

    def __post_init__(self) -> None:
        for name, allowed in (("format", FORMATS), ("pairs", PAIR_MODES), ("ties", TIES)):
            if getattr(self, name) not in allowed:
                raise ExportError(f"{name} must be one of {', '.join(allowed)}, "
                                  f"not {getattr(self, name)!r}")
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 1:
            raise ExportError(f"--min-agreement must be in [0, 1], got {self.min_agreement}")
        if not 0 <= self.test_fraction < 1:
            raise ExportError(f"test fraction must be in [0, 1), got {self.test_fraction}")


# ---------------------------------------------------------------------------------------------
# Reading the vote log
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Rankings -> scored pairs (pure)
# ---------------------------------------------------------------------------------------------

def response_scores(candidate_ids: Sequence[int], ranks: Sequence[int] | None,
                    demonstration_id: int | None = None) -> dict[int, float]:
    """Each response's share of the other responses in the ranking that it beats, ties
    counting half. A demonstration beats every candidate; candidates without ranks tie.

    >>> response_scores([7, 8, 9], [2, 1, 2])
    {7: 0.25, 8: 1.0, 9: 0.25}
    """
    # Rank 0 puts the demonstration above every candidate; no ranks means all tie at 1.
    ranked = dict(zip(candidate_ids, ranks if ranks is not None else [1] * len(candidate_ids)))
    if demonstration_id is not None:
        ranked[demonstration_id] = 0
    others = len(ranked) - 1
    if others == 0:
        return {c: 1.0 for c in ranked}
    return {c: sum(1.0 if r < s else 0.5 if r == s else 0.0
                   for d, s in ranked.items() if d != c) / others
            for c, r in ranked.items()}


def best_worst_pairs(candidate_ids: Sequence[int], ranks: Sequence[int] | None,
                     demonstration_id: int | None = None) -> list[RankedPair]:
    """Every response at the best rank against every response at the worst rank (shown order).
    A demonstration is the only best response; unranked candidates are all worst. A ranking
    that is one big tie gives nothing."""
    if ranks is None:
        worst = list(candidate_ids)
        best = [] if demonstration_id is None else [demonstration_id]
    else:
        worst = [c for c, r in zip(candidate_ids, ranks) if r == max(ranks)]
        best = ([demonstration_id] if demonstration_id is not None
                else [c for c, r in zip(candidate_ids, ranks) if r == min(ranks)])
    return [RankedPair(b, w) for b in best for w in worst if b not in worst]


def record_pairs(record: RankingRecord, mode: str) -> list[RankedPair]:
    if record.skipped:
        return []
    if mode == "best-worst":
        return best_worst_pairs(record.candidate_ids, record.ranks, record.demonstration_id)
    return ranking_to_pairs(record.candidate_ids, record.ranks, record.demonstration_id)


def _pair_key(pair: RankedPair) -> tuple[int, int]:
    return min(pair.chosen, pair.rejected), max(pair.chosen, pair.rejected)


def _outcome(pair: RankedPair) -> int | None:
    """The winning response, or None for a tie."""
    return None if pair.tie else pair.chosen


@dataclass
class ExportedPair:
    """One judged pair of responses as the export will write it (a row of the ``default``
    configuration), before formatting: its ranking, the ``RankedPair``, scores and agreement."""

    record: RankingRecord
    pair: RankedPair
    score_chosen: float
    score_rejected: float
    annotators: list[str]
    agreement: float | None


@dataclass
class PairSelection:
    rows: list[ExportedPair]
    dropped: dict[str, int] = field(default_factory=dict)


def select_pairs(records: Sequence[RankingRecord], config: ExportConfig) -> PairSelection:
    """The preference rows of ``records`` under ``config``; see the module docstring."""
    # Agreement looks at every judgment of a pair of responses, whatever the pairs mode.
    judgments: dict[tuple[int, int], list[tuple[str, int | None]]] = defaultdict(list)
    label_votes = labels(records)
    for record in label_votes:
        for pair in record_pairs(record, "all"):
            judgments[_pair_key(pair)].append((record.annotator, _outcome(pair)))
    selection = PairSelection(rows=[])

    def drop(reason: str) -> None:
        selection.dropped[reason] = selection.dropped.get(reason, 0) + 1

    for record in label_votes:
        texts = dict(zip(record.candidate_ids, record.candidates))
        if record.demonstration_id is not None:
            texts[record.demonstration_id] = record.demonstration
        scores = response_scores(record.candidate_ids, record.ranks, record.demonstration_id)
        for pair in record_pairs(record, config.pairs):
            if texts[pair.chosen].strip() == texts[pair.rejected].strip():
                drop(DROP_IDENTICAL)
                continue
            if pair.tie and config.ties == "exclude":
                drop(DROP_TIE)
                continue
            judged = judgments[_pair_key(pair)]
            agreement = None
            if len(judged) >= 2:
                agreement = sum(o == _outcome(pair) for _, o in judged) / len(judged)
            if config.min_agreement is not None:
                if agreement is None:
                    drop(DROP_SINGLE)
                    continue
                if agreement < config.min_agreement:
                    drop(DROP_DISAGREED)
                    continue
            selection.rows.append(ExportedPair(
                record, pair, scores[pair.chosen], scores[pair.rejected],
                sorted({name for name, _ in judged}), agreement))
    return selection


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------

def _message_list():
    from datasets import List, Value

    return List({"role": Value("string"), "content": Value("string")})


def preference_features(format: str):
    from datasets import Features, List, Value

    text = _message_list() if format == "conversational" else Value("string")
    return Features({
        "prompt": text, "chosen": text, "rejected": text,
        "score_chosen": Value("float64"), "score_rejected": Value("float64"),
        "margin": Value("float64"), "annotator": Value("string"),
        "annotators": List(Value("string")), "agreement": Value("float64"),
        "tie": Value("bool"), "source_run": Value("int64"),
        "chosen_is_demonstration": Value("bool"), "ranking_id": Value("int64"),
        "prompt_id": Value("int64"), "chosen_id": Value("int64"), "rejected_id": Value("int64"),
        "suggestion_accepted": Value("bool"),
        "item_status": Value("string"), "annotator_weight": Value("float64"),
    })


def ranking_features():
    from datasets import Features, List, Value

    return Features({
        "ranking_id": Value("int64"), "annotator": Value("string"), "prompt_id": Value("int64"),
        "prompt": _message_list(), "item_id": Value("int64"), "source_run": Value("int64"),
        "is_gold": Value("bool"), "gold_ranks": List(Value("int64")),
        "candidate_ids": List(Value("int64")), "candidates": List(Value("string")),
        "ranks": List(Value("int64")), "has_tie": Value("bool"), "all_bad": Value("bool"),
        "skipped": Value("bool"), "rationale": Value("string"),
        "demonstration_id": Value("int64"), "demonstration": Value("string"),
        "shown_at": Value("float64"), "submitted_at": Value("float64"),
        "supersedes": Value("int64"), "superseded_by": Value("int64"),
        "user_id": Value("int64"), "active_seconds": Value("float64"),
        "adjudication_id": Value("int64"), "overruled": Value("bool"),
        "item_status": Value("string"), "annotator_weight": Value("float64"),
        "annotator_temperature": Value("float64"),
        "suggested_ranks": List(Value("int64")), "suggestion_scorer": Value("string"),
        "suggestion_accepted": Value("bool"), "guidelines_version": Value("string"),
    })


def preference_row(row: ExportedPair, format: str, tokenizer=None) -> dict:
    record, pair = row.record, row.pair
    texts = dict(zip(record.candidate_ids, record.candidates))
    if record.demonstration_id is not None:
        texts[record.demonstration_id] = record.demonstration
    if format == "conversational":
        prompt = record.prompt
        chosen = [{"role": "assistant", "content": texts[pair.chosen]}]
        rejected = [{"role": "assistant", "content": texts[pair.rejected]}]
    else:
        from data.chat import format_chat

        prompt = format_chat(tokenizer, record.prompt)
        chosen, rejected = texts[pair.chosen], texts[pair.rejected]
    return {
        "prompt": prompt, "chosen": chosen, "rejected": rejected,
        "score_chosen": row.score_chosen, "score_rejected": row.score_rejected,
        "margin": row.score_chosen - row.score_rejected, "annotator": record.annotator,
        "annotators": row.annotators, "agreement": row.agreement, "tie": pair.tie,
        "source_run": record.source_run,
        "chosen_is_demonstration": pair.chosen == record.demonstration_id,
        "ranking_id": record.ranking_id, "prompt_id": record.prompt_id,
        "chosen_id": pair.chosen, "rejected_id": pair.rejected,
        "suggestion_accepted": record.suggestion_accepted,
    }


def item_status_of(record: RankingRecord, statuses: dict) -> str | None:
    return statuses.get(record.item_id if record.item_id is not None
                        else (record.prompt_id, record.source_run))


def ranking_row(record: RankingRecord, statuses: dict | None = None, fit=None) -> dict:
    """The record, its item's status (``data.adjudication``) and its annotator's reliability
    (``data.reliability``)."""
    who = fit.annotators.get(record.annotator) if fit is not None else None
    return {**asdict(record), "item_status": item_status_of(record, statuses or {}),
            "annotator_weight": who and who.weight,
            "annotator_temperature": who and who.temperature}


def rankings_from_rows(rows: Iterable[dict]) -> list[RankingRecord]:
    """The raw configuration's rows back as records (any split order), oldest first."""
    names = RankingRecord.__dataclass_fields__
    # Exports made before revisions and suggestions existed lack those columns: defaults.
    return sorted((RankingRecord(**{k: row[k] for k in names if k in row}) for row in rows),
                  key=lambda r: r.ranking_id)


def held_out_prompts(prompt_ids: Iterable[int], fraction: float, seed: int) -> set[int]:
    """Prompts held out for ``test``: a seeded hash order, round(n × fraction) of them and at
    least one when there are two or more prompts and the fraction is not 0."""
    return held_out_groups(prompt_ids, fraction, seed)


@dataclass
class Export:
    """What an export holds, before it is written anywhere."""

    preferences: object
    """``DatasetDict`` with train/test preference rows."""
    rankings: object
    """``DatasetDict`` with train/test raw rankings."""
    config: ExportConfig
    dropped: dict[str, int]
    stats: dict
    """Counts and settings for the dataset card."""
    card: str = ""

    def line(self) -> str:
        p, r = self.preferences, self.rankings
        dropped = ", ".join(f"{n} {why}" for why, n in sorted(self.dropped.items())) or "none"
        return (f"{p['train'].num_rows} train + {p['test'].num_rows} test preference pairs "
                f"({self.config.format}, pairs {self.config.pairs}); "
                f"{r['train'].num_rows + r['test'].num_rows} rankings from "
                f"{self.stats['annotators']} annotators; dropped: {dropped}")


def build_export(db, config: ExportConfig, *, tokenizer=None, db_label: str = "") -> Export:
    """Reads the vote log and builds both configurations and the card; writes nothing."""
    from datasets import Dataset, DatasetDict

    if config.format == "standard" and tokenizer is None:
        raise ExportError("the standard format renders prompts with a chat template: "
                          "pass a tokenizer (--model)")
    label = db_label or "the database"
    records = read_rankings(db, keep_annotator_names=config.keep_annotator_names)
    if not records:
        raise ExportError(f"{label} has no rankings to export yet; rank candidates in "
                          "`rankloop app` first")
    selection = select_pairs(records, config)
    if not selection.rows:
        dropped = ", ".join(f"{n} {why}" for why, n in sorted(selection.dropped.items()))
        raise ExportError(
            f"{label} has {len(records)} rankings but no preference pairs to export "
            f"(skips and unranked all-bad votes give none; dropped: {dropped or 'none'})")
    held_out = held_out_prompts((r.prompt_id for r in records), config.test_fraction, config.seed)

    def split(rows: list[dict], features) -> DatasetDict:
        return DatasetDict({
            name: Dataset.from_dict(
                {k: [row[k] for row in rows if (row["prompt_id"] in held_out) == (name == "test")]
                 for k in features}, features=features)
            for name in SPLITS})

    preference_rows = [preference_row(row, config.format, tokenizer) for row in selection.rows]
    statuses, fit = item_statuses(records), fit_reliability(records)
    for out, row in zip(preference_rows, selection.rows):
        out["item_status"] = item_status_of(row.record, statuses)
        out["annotator_weight"] = fit.annotators[row.record.annotator].weight
    export = Export(
        preferences=split(preference_rows, preference_features(config.format)),
        rankings=split([ranking_row(r, statuses, fit) for r in records], ranking_features()),
        config=config, dropped=selection.dropped,
        stats=card_stats(db, records, preference_rows),
    )
    export.card = dataset_card(export)
    return export


# ---------------------------------------------------------------------------------------------
# The dataset card
# ---------------------------------------------------------------------------------------------

def card_stats(db, records: Sequence[RankingRecord], preference_rows: Sequence[dict]) -> dict:
    """Counts over the latest version of each vote, plus how many versions were replaced."""
    from data.agreement import krippendorff_alpha_ordinal, pairwise_agreement

    revised = len(records) - len(latest(records))
    records = latest(records)

    ranked = [r for r in records if r.ranks is not None and not r.skipped and not r.is_gold]
    agreement_rows = [{"item_id": r.item_id, "annotator": r.annotator,
                       "candidate_ids": r.candidate_ids, "ranks": r.ranks} for r in ranked]
    per_pair = pairwise_agreement(agreement_rows)
    agreed = sum(a for a, _ in per_pair.values())
    compared = sum(t for _, t in per_pair.values())
    runs = sorted({r.source_run for r in records if r.source_run is not None})
    settings = [dict(zip(("id", "model", "backend", "k", "temperature", "top_p",
                          "max_new_tokens", "seed"), row))
                for row in db.execute(
                    "SELECT id, model, backend, k, temperature, top_p, max_new_tokens, seed "
                    f"FROM generation_runs WHERE id IN ({','.join('?' * len(runs))}) ORDER BY id",
                    runs)] if runs else []
    statuses = item_statuses(records)
    gold_items = {r.item_id for r in records if r.is_gold}
    items: dict[int, set[str]] = defaultdict(set)
    for r in ranked:
        items[r.item_id].add(r.annotator)
    return {
        "rankings": len(records),
        "skipped": sum(r.skipped for r in records),
        "all_bad": sum(r.all_bad for r in records),
        "with_ties": sum(r.has_tie for r in records),
        "demonstrations": sum(r.demonstration_id is not None for r in records),
        "gold": sum(r.is_gold for r in records),
        "prompts": len({r.prompt_id for r in records}),
        "annotators": len({r.annotator for r in records}),
        "multiply_ranked_items": sum(len(a) >= 2 for a in items.values()),
        "item_statuses": {status: sum(v == status for k, v in statuses.items()
                                      if k not in gold_items)
                          for status in ("unanimous", "adjudicated", "unresolved")},
        "pairwise_agreement": agreed / compared if compared else None,
        "compared_pairs": compared,
        "krippendorff_alpha": krippendorff_alpha_ordinal(agreement_rows),
        "tie_pairs": sum(row["tie"] for row in preference_rows),
        "revised": revised,
        "suggested": sum(r.suggestion_accepted is not None for r in records),
        "suggestions_accepted": sum(bool(r.suggestion_accepted) for r in records),
        "runs": settings,
    }


def _number(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def dataset_card(export: Export) -> str:
    """README.md for the export: Hub metadata (license, both configurations) and a description."""
    config, stats = export.config, export.stats
    folders = {name: f"parquet/{folder}" for name, folder in CONFIG_FOLDERS.items()}
    yaml_configs = "".join(
        f"- config_name: {name}\n"
        + ("  default: true\n" if name == PREFERENCES else "")
        + "  data_files:\n"
        + "".join(f"  - split: {s}\n    path: {folders[name]}/{s}.parquet\n" for s in SPLITS)
        for name in CONFIG_FOLDERS)
    p, r = export.preferences, export.rankings
    runs = "\n".join(
        f"| {run['id']} | {run['model']} | {run['backend']} | {run['k']} | {run['temperature']} "
        f"| {run['top_p']} | {run['max_new_tokens']} | {run['seed']} |" for run in stats["runs"])
    dropped = ", ".join(f"{n} {why}" for why, n in sorted(export.dropped.items())) or "none"
    prompt_format = ("chat messages (`[{role, content}]`); `chosen`/`rejected` are one "
                     "assistant message each" if config.format == "conversational" else
                     "the prompt rendered with the model's chat template, ending where the "
                     "reply starts; `chosen`/`rejected` are the reply texts")
    return f"""---
license: {config.license}
task_categories:
- text-generation
tags:
- preference
- rlhf
- dpo
- reward-modeling
- rankloop
configs:
{yaml_configs}---

# Human preference rankings (RankLoop export)

Human rankings of sampled model responses, collected with RankLoop's labeling app.

## Contents

| | train | test |
| --- | --- | --- |
| preference pairs (`default`) | {p['train'].num_rows} | {p['test'].num_rows} |
| rankings (`rankings`) | {r['train'].num_rows} | {r['test'].num_rows} |

- {stats['prompts']} prompts, {stats['rankings']} submissions by {stats['annotators']} annotators:
  {stats['skipped']} skipped, {stats['all_bad']} marked "all candidates are bad",
  {stats['with_ties']} with ties, {stats['demonstrations']} with a written demonstration,
  {stats['gold']} on gold (check) items. {stats['revised']} earlier versions were replaced by
  the annotator's revision (kept in `rankings`, left out of everything else).
- {stats['suggested']} submissions started from a reward model's suggested ranking;
  {stats['suggestions_accepted']} of them kept it unchanged (`suggestion_accepted`).
- Test split: {config.test_fraction:g} of the prompts (seed {config.seed}); all rows of a
  prompt are in one split.
- Left out of the preference pairs: {dropped}.

## Agreement

- {stats['multiply_ranked_items']} items ranked by two or more annotators. Items (`item_status`):
  {stats['item_statuses']['unanimous']} unanimous, {stats['item_statuses']['adjudicated']}
  adjudicated by a reviewer, {stats['item_statuses']['unresolved']} unresolved.
- Pairwise agreement (same order or both tie, over {stats['compared_pairs']} candidate pairs):
  {_number(stats['pairwise_agreement'])}.
- Krippendorff's alpha (ordinal, ranks): {_number(stats['krippendorff_alpha'])}.

## Generation

| run | model | backend | k | temperature | top_p | max_new_tokens | seed |
| --- | --- | --- | --- | --- | --- | --- | --- |
{runs}

## Format

`default` is TRL's preference format ({config.format}): `prompt` is {prompt_format}.
Pairs: `{config.pairs}`; ties {'included (tie=true, margin 0)' if config.ties == 'include'
else 'left out'}; minimum agreement {_number(config.min_agreement, 2)}.

- `score_chosen`, `score_rejected`: the response's share of the other responses in its ranking
  that it beats (ties count half; a written demonstration scores 1.0). `margin` is their
  difference, which TRL's `RewardTrainer` subtracts in its loss.
- `annotator` made this judgment; `annotators` judged the same pair of responses;
  `agreement` is the share of their judgments matching this row (null when judged once).
- `tie`, `source_run` (generation run above), `chosen_is_demonstration`, and the ids
  `ranking_id`, `prompt_id`, `chosen_id`, `rejected_id` linking to `rankings`.
- `item_status`: `unanimous` (no two votes on the item order a pair differently),
  `adjudicated` (a reviewer decided which votes are its labels) or `unresolved`.
  `annotator_weight`: the annotator's reliability weight in [0, 1], fitted from overlap and
  gold (near 0 for someone ranking at random).

`rankings` holds every submission as made: `candidate_ids` and `candidates` in the order
shown, `ranks` (1 = best, equal = tie; null for skips and unranked "all bad"), `has_tie`,
`all_bad`, `skipped`, `rationale`, `demonstration`, `is_gold`/`gold_ranks`, `shown_at`,
`submitted_at` (Unix seconds), `active_seconds` (time the task was visible and in use, when
the page measured it). `item_status`, `annotator_weight` and `annotator_temperature` (the
fitted inverse noise) as above; `adjudication_id` names the reviewer's decision on the item
and `overruled` marks a vote that decision took out of the labels.
A revised submission is a new row with `supersedes` set; the
row it replaced has `superseded_by` and is not used for pairs. `suggested_ranks`,
`suggestion_scorer` and `suggestion_accepted` (also in `default`) tell a ranking pre-filled
from a reward model and kept unchanged from an independent judgment. `guidelines_version`
names the annotators' guidelines in force when the ranking was made (a hash of their text).

```python
from datasets import load_dataset
pairs = load_dataset("THIS_REPO")               # or a local export folder
rankings = load_dataset("THIS_REPO", "rankings")
```

## Privacy

Annotators appear as {'their user names' if config.keep_annotator_names else
'stable pseudonyms (`annotator-<n>`)'}. Rationales and demonstrations are free text written by
the annotators and are published as written.
"""


# ---------------------------------------------------------------------------------------------
# Writing: a local folder, the Hub
# ---------------------------------------------------------------------------------------------

def check_target(target: Path, overwrite: bool) -> None:
    if target.exists():
        if not target.is_dir():
            raise ExportError(f"cannot export to {target}: it is a file")
        if any(target.iterdir()) and not overwrite:
            raise ExportError(f"{target} is not empty; choose a new folder or pass --overwrite")
    parent = target.parent
    if not parent.is_dir():
        raise ExportError(f"cannot export to {target}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"cannot export to {target}: directory {parent} is not writable")


def write_files(export: Export, folder: Path, *, disk: bool = True) -> list[Path]:
    """README.md and parquet files (what the Hub gets), plus jsonl and ``save_to_disk``
    folders when ``disk``. Returns the files the Hub repository is made of."""
    hub_files = [folder / "README.md"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(export.card)
    for name, folder_name in CONFIG_FOLDERS.items():
        dataset = export.preferences if name == PREFERENCES else export.rankings
        for split_name in SPLITS:
            parquet = folder / "parquet" / folder_name / f"{split_name}.parquet"
            parquet.parent.mkdir(parents=True, exist_ok=True)
            dataset[split_name].to_parquet(str(parquet))
            hub_files.append(parquet)
            if disk:
                jsonl = folder / "jsonl" / folder_name / f"{split_name}.jsonl"
                jsonl.parent.mkdir(parents=True, exist_ok=True)
                # json.dumps keeps floats exact (pandas' to_json rounds them to 10 digits).
                with jsonl.open("w", encoding="utf-8") as f:
                    for row in dataset[split_name]:
                        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        if disk:
            dataset.save_to_disk(str(folder / folder_name))
    return hub_files


def write_local(export: Export, target: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Writes the export into ``target`` atomically: a folder next to it is filled, then
    renamed, so a failed export leaves no half-written folder.

    Layout: ``README.md`` (the card), ``preferences/`` and ``rankings/`` (``save_to_disk``),
    ``parquet/<config>/<split>.parquet`` (what the card's configs and the Hub point at) and
    ``jsonl/<config>/<split>.jsonl``.
    """
    target = Path(target).expanduser()
    check_target(target, overwrite)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    except OSError as exc:
        raise ExportError(f"cannot export to {target}: {exc.strerror or exc}") from None
    try:
        write_files(export, staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ExportError(f"cannot export to {target}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def check_repo_id(repo_id: str) -> str:
    """``OWNER/NAME`` as the Hub accepts it; raises ExportError otherwise."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ExportError(f"invalid Hub repository id {repo_id!r}: "
                          f"{str(exc).splitlines()[0]}") from None
    if not _REPO_ID.fullmatch(repo_id) or len(repo_id.split("/")[1]) > 96:
        raise ExportError(f"invalid Hub repository id {repo_id!r}: use OWNER/NAME with letters, "
                          "digits, '-', '_' and '.'")
    return repo_id


def hub_token(token: str | None = None) -> str:
    """The token given, else the usual Hugging Face one ($HF_TOKEN or `hf auth login`)."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise ExportError("no Hugging Face token: set HF_TOKEN or run `hf auth login` "
                          "(a token with write access)")
    return token


def push_to_hub(export: Export, repo_id: str, *, private: bool = False,
                token: str | None = None) -> str:
    """Uploads the card and both configurations' parquet files to the dataset repository
    ``repo_id`` (created if needed) in one commit, so a failure leaves the repository as it
    was. Returns the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    check_repo_id(repo_id)
    api = HfApi(token=hub_token(token))
    with tempfile.TemporaryDirectory(prefix="rankloop-export-") as tmp:
        folder = Path(tmp)
        files = write_files(export, folder, disk=False)
        operations = [CommitOperationAdd(path_in_repo=f.relative_to(folder).as_posix(),
                                         path_or_fileobj=str(f)) for f in files]
        try:
            api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
            commit = api.create_commit(
                repo_id, operations, repo_type="dataset",
                commit_message=f"RankLoop export: {export.line()}")
        except (HfHubHTTPError, OSError) as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"upload to {repo_id} failed: {message}") from None
    return getattr(commit, "commit_url", str(commit))


# ---------------------------------------------------------------------------------------------
# Conversations for supervised fine-tuning
# ---------------------------------------------------------------------------------------------

def sft_conversations(db, source: str) -> list[list[dict]]:
    """Prompt + response conversations from the vote log.

    ``demonstrations``: every answer an annotator wrote in the app (an answer replaced by a
    revision is left out). ``chosen``: the responses at the best rank of each label (the
    demonstration when there is one; none from an "all bad" vote without one, or from skips
    and gold items), each (prompt, response) once. Only the latest version of a vote counts.
    """
    if source not in SFT_SOURCES:
        raise ExportError(f"SFT source must be one of {', '.join(SFT_SOURCES)}, not {source!r}")
    if source == "demonstrations":
        rows = db.execute(
            "SELECT p.messages, c.text FROM candidates c JOIN prompts p ON p.id = c.prompt_id "
            "WHERE c.author_id IS NOT NULL AND c.id IN (SELECT demonstration_id FROM "
            f"{LABEL_RANKINGS}) ORDER BY c.id").fetchall()
        return [json.loads(m) + [{"role": "assistant", "content": t}] for m, t in rows
                if t.strip()]
    seen: set[tuple[int, int]] = set()
    out = []
    for record in labels(read_rankings(db)):
        texts = dict(zip(record.candidate_ids, record.candidates))
        if record.demonstration_id is not None:
            best = [record.demonstration_id]
            texts[record.demonstration_id] = record.demonstration
        elif record.all_bad or record.ranks is None:
            continue
        else:
            best = [c for c, r in zip(record.candidate_ids, record.ranks) if r == min(record.ranks)]
        for response in best:
            if (record.prompt_id, response) not in seen and texts[response].strip():
                seen.add((record.prompt_id, response))
                out.append(record.prompt + [{"role": "assistant", "content": texts[response]}])
    return out
