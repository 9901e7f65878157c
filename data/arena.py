"""Blind comparisons of policies: votes between policies read from the vote log, the leaderboard
over them, the win rate of one policy over another, and the Arena export layout.

Where the votes come from. Any ranking whose candidates come from more than one policy
(``candidates.policy_id``, else the run's model, see ``store.candidate_policies``) compares
those policies: a comparison item made by ``rankloop arena`` (one answer per policy), or a loop
round where some of each prompt's candidates came from the previous policy. Each pair of
shown candidates from two different policies is one policy-vs-policy vote (``policy_votes``);
pairs within one policy say nothing about the policies and are left out. Only label votes
count (``data.votes.labels``: the latest version of each vote, no skips, no gold).

A vote's ``model_a`` is the candidate shown first (left) to that annotator: the queue shuffles
the order per assignment, so side carries no policy.

The outcome: the better rank wins; equal ranks tie; a vote marked "all bad" with no ranks (or
equal ranks) is ``both_bad``, which the ratings count as a tie (``data.ratings``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data import store
from data.errors import ConfigError
from data.ratings import Ratings, count_votes, fit_ratings
from data.votes import RankingRecord, labels, read_rankings

ARENA_WINNERS = {"model_a": "model_a", "model_b": "model_b", "tie": "tie",
                 "both_bad": "tie (bothbad)"}
"""``data.ratings`` winner -> the Arena layout's (``tie (bothbad)`` has a space in Arena's
published data)."""


@dataclass(frozen=True)
class PolicyVote:
    """One blind pairwise judgment between two policies (the fields ``fit_ratings`` reads)."""

    model_a: str
    model_b: str
    winner: str
    """``model_a``, ``model_b``, ``tie`` or ``both_bad``."""
    tokens_a: int
    tokens_b: int
    ranking_id: int
    """The vote-log row it came from: votes of one ranking share an annotator and a prompt."""
    prompt_id: int
    candidate_a: int
    candidate_b: int
    item_id: int | None = None


def _outcome(record: RankingRecord, i: int, j: int) -> str:
    ranks = record.ranks
    if ranks is None or ranks[i] == ranks[j]:
        return "both_bad" if record.all_bad else "tie"
    return "model_a" if ranks[i] < ranks[j] else "model_b"


def policy_votes(records: Iterable[RankingRecord],
                 policy_of: Mapping[int, tuple[str, int]]) -> list[PolicyVote]:
    """The policy-vs-policy votes in ``records`` (already filtered to labels by the caller, or
    not): one per pair of shown candidates from different policies, in shown order.
    ``policy_of``: candidate id -> (policy name, token count), ``store.candidate_policies``."""
    out = []
    for record in records:
        if record.skipped or (record.ranks is None and not record.all_bad):
            continue
        ids = record.candidate_ids
        for i in range(len(ids)):
            for j in range(i + 1, len(ids)):
                (name_a, tokens_a), (name_b, tokens_b) = policy_of[ids[i]], policy_of[ids[j]]
                if name_a == name_b:
                    continue
                out.append(PolicyVote(name_a, name_b, _outcome(record, i, j), tokens_a,
                                      tokens_b, record.ranking_id, record.prompt_id, ids[i],
                                      ids[j], record.item_id))
    return out


def comparison_records(db, *, comparison_items_only: bool = False,
                       run_id: int | None = None) -> list[RankingRecord]:
    """The label votes whose candidates come from more than one policy (of one run, or only
    those on ``rankloop arena``'s comparison items)."""
    records = labels(read_rankings(db))
    if run_id is not None:
        records = [r for r in records if r.source_run == run_id]
    if comparison_items_only:
        wanted = {row[0] for row in db.execute("SELECT id FROM items WHERE comparison = 1")}
        records = [r for r in records if r.item_id in wanted]
    return records


def votes_from_db(db, *, comparison_items_only: bool = False,
                  run_id: int | None = None) -> list[PolicyVote]:
    """Every policy-vs-policy vote in the store (see the module docstring)."""
    return policy_votes(comparison_records(db, comparison_items_only=comparison_items_only,
                                           run_id=run_id), store.candidate_policies(db))


# --- new over previous ---------------------------------------------------------------------------

@dataclass(frozen=True)
class WinRate:
    new: str
    previous: str
    win_rate: float
    """Share of new-vs-previous votes the new policy won, ties (and both-bad) counting half."""
    ci_low: float
    ci_high: float
    votes: int
    rankings: int
    """Submissions the votes came from; the bootstrap resamples these, since the votes of one
    ranking (one annotator, one prompt) are not independent."""
    level: float = 0.95


def win_rate(votes: Sequence[PolicyVote], new: str, previous: str, *, resamples: int = 1000,
             level: float = 0.95, seed: int = 0) -> WinRate | None:
    """The new policy's win rate over the previous one with a percentile-bootstrap interval
    over rankings; None when no vote compares them."""
    per_ranking: dict[int, list[float]] = {}
    for v in votes:
        if {v.model_a, v.model_b} != {new, previous}:
            continue
        if v.winner in ("tie", "both_bad"):
            score = 0.5
        else:
            score = float((v.model_a if v.winner == "model_a" else v.model_b) == new)
        per_ranking.setdefault(v.ranking_id, []).append(score)
    if not per_ranking:
        return None
    sums = np.array([sum(s) for s in per_ranking.values()])
    counts = np.array([len(s) for s in per_ranking.values()], dtype=float)
    point = float(sums.sum() / counts.sum())
    low = high = point
    if resamples and len(sums) > 1:
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, len(sums), (resamples, len(sums)))
        rates = sums[picks].sum(1) / counts[picks].sum(1)
        tail = (1.0 - level) / 2.0
        low, high = (float(q) for q in np.quantile(rates, [tail, 1.0 - tail]))
    return WinRate(new, previous, point, low, high, int(counts.sum()), len(sums), level)


# --- the leaderboard ------------------------------------------------------------------------------

@dataclass
class Leaderboard:
    ratings: Ratings
    length_controlled: Ratings | None
    """None when fewer than two policies have votes."""
    win_matrix: dict[str, dict[str, float]]
    """Row policy's share of its votes against the column policy (ties half)."""
    pair_votes: dict[str, dict[str, int]]
    mean_tokens: dict[str, float]
    """Mean length (tokens) of each policy's answers in the votes."""
    votes: int
    names: list[str] = field(default_factory=list)
    """Policies, best rating first."""

    def rows(self) -> list[dict]:
        """One row per policy, best first: rating, interval, votes, length, and the
        length-controlled rating where there is one."""
        out = []
        for name in self.names:
            row = {"policy": name, "rating": self.ratings.rating[name],
                   "ci_low": self.ratings.ci_low[name], "ci_high": self.ratings.ci_high[name],
                   "votes": self.ratings.votes[name], "mean_tokens": self.mean_tokens[name]}
            if self.length_controlled is not None:
                row["lc_rating"] = self.length_controlled.rating[name]
                row["lc_ci_low"] = self.length_controlled.ci_low[name]
                row["lc_ci_high"] = self.length_controlled.ci_high[name]
            out.append(row)
        return out

    def text(self) -> str:
        """The leaderboard as a plain-text table, then the win matrix."""
        if not self.names:
            return "no votes between policies yet"
        level = f"{self.ratings.level:.0%}"
        lines = [f"{self.votes} votes between {len(self.names)} policies; ratings on the Arena "
                 f"scale with {level} bootstrap intervals ({self.ratings.resamples} resamples)",
                 ""]
        head = f"{'policy':<24} {'rating':>7} {level + ' interval':>17} {'votes':>6} " \
               f"{'tokens':>7}" + (f" {'length-controlled':>28}" if self.length_controlled
                                   else "")
        lines.append(head)
        for row in self.rows():
            line = (f"{row['policy'][:24]:<24} {_num(row['rating']):>7} "
                    f"{_interval(row['ci_low'], row['ci_high']):>17} {row['votes']:>6} "
                    f"{row['mean_tokens']:>7.1f}")
            if "lc_rating" in row:
                interval = _interval(row["lc_ci_low"], row["lc_ci_high"])
                line += f" {_num(row['lc_rating']):>7} {interval:>20}"
            lines.append(line)
        if self.length_controlled is not None and self.length_controlled.length_coef is not None:
            lo, hi = self.length_controlled.length_ci
            lines.append(f"length coefficient: {_num(self.length_controlled.length_coef)} "
                         f"points per unit of length feature ({_interval(lo, hi)})")
        lines += ["", "win rate of row over column (votes):"]
        width = max(10, *(len(n[:16]) for n in self.names))
        lines.append(" " * width + "".join(f" {n[:16]:>16}" for n in self.names))
        for a in self.names:
            cells = []
            for b in self.names:
                n = self.pair_votes[a][b]
                cells.append(f" {'–' if not n else f'{self.win_matrix[a][b]:.2f} ({n})':>16}")
            lines.append(f"{a[:width]:<{width}}" + "".join(cells))
        return "\n".join(lines) + "\n"


def _num(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.0f}"


def _interval(low: float, high: float) -> str:
    if low is None or math.isnan(low):
        return "–"
    return f"[{low:.0f}, {high:.0f}]"


def leaderboard(votes: Sequence[PolicyVote], *, resamples: int = 1000, level: float = 0.95,
                seed: int = 0, baseline: str | None = None) -> Leaderboard:
    """Ratings with intervals (plain and length-controlled), win matrix, votes per pair and
    mean answer length, from policy votes."""
    if resamples < 0:
        raise ConfigError("resamples must be 0 or more")
    ratings = fit_ratings(votes, resamples=resamples, level=level, seed=seed, baseline=baseline)
    names = sorted(ratings.policies, key=lambda n: -ratings.rating[n]
                   if not math.isnan(ratings.rating[n]) else math.inf)
    controlled = None
    if len(names) >= 2:
        controlled = fit_ratings(votes, resamples=resamples, level=level, seed=seed,
                                 baseline=baseline, length_control=True)
    counts = count_votes(votes, ratings.policies)
    index = {n: i for i, n in enumerate(counts.policies)}
    games, shares = counts.games, counts.win_matrix()
    win_matrix = {a: {b: float(shares[index[a], index[b]]) for b in names} for a in names}
    pair_votes = {a: {b: int(games[index[a], index[b]]) for b in names} for a in names}
    tokens: dict[str, list[int]] = {}
    for v in votes:
        tokens.setdefault(v.model_a, []).append(v.tokens_a)
        tokens.setdefault(v.model_b, []).append(v.tokens_b)
    mean_tokens = {n: (sum(tokens[n]) / len(tokens[n]) if tokens.get(n) else math.nan)
                   for n in names}
    return Leaderboard(ratings, controlled, win_matrix, pair_votes, mean_tokens, len(votes),
                       names)


# --- export in the Arena layout -----------------------------------------------------------------

def arena_rows(db, *, comparison_items_only: bool = False) -> list[dict]:
    """The policy votes as rows in Chatbot Arena's published layout: ``question_id``,
    ``model_a``, ``model_b``, ``winner`` (``model_a``, ``model_b``, ``tie`` or
    ``tie (bothbad)``), ``judge`` (the annotator's pseudonym), ``conversation_a`` /
    ``conversation_b`` (the prompt's messages then the answer), ``turn``, ``anony`` (the
    annotator did not see the names: always true here) and ``tstamp``."""
    records = comparison_records(db, comparison_items_only=comparison_items_only)
    by_id = {r.ranking_id: r for r in records}
    texts = {cid: text for r in records for cid, text in zip(r.candidate_ids, r.candidates)}
    rows = []
    for v in policy_votes(records, store.candidate_policies(db)):
        record = by_id[v.ranking_id]
        prompt = record.prompt
        rows.append({
            "question_id": f"{v.prompt_id}",
            "model_a": v.model_a,
            "model_b": v.model_b,
            "winner": ARENA_WINNERS[v.winner],
            "judge": record.annotator,
            "conversation_a": prompt + [{"role": "assistant", "content": texts[v.candidate_a]}],
            "conversation_b": prompt + [{"role": "assistant", "content": texts[v.candidate_b]}],
            "turn": sum(1 for m in prompt if m.get("role") == "user"),
            "anony": True,
            "tstamp": record.submitted_at,
        })
    return rows


def export_arena(db, target: str, *, overwrite: bool = False) -> int:
    """Writes ``arena_rows`` to ``target``, one JSON object per line (written beside it and
    renamed, so a failure leaves no half file); returns how many rows."""
    if target.startswith("hub:"):
        raise ConfigError("the Arena layout is written to a local .jsonl file, not the Hub")
    path = Path(target).expanduser()
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give a file name such as {path}/arena.jsonl")
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise ConfigError(f"folder {path.parent} does not exist")
    rows = arena_rows(db)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return len(rows)
