"""Scored pairs for policy training (REBEL, DPO): per prompt, a chosen and a rejected response
with a reward for each (``ScoredPair``).

The project's pair types, from the vote to the tensors: ``data.rankings.RankedPair`` (two
candidate ids of one ranking, as the vote log's comparisons store them);
``data.export.ExportedPair`` (one judged pair as the published dataset has it);
``data.preferences.PreferencePair`` (prompt, chosen and rejected texts, for the reward model
and TRL-format files);
``ScoredPair`` here (the same texts with a reward each, for the policy); then the tokenized
``reward.batches.EncodedPair`` and ``policy.pair_batches.EncodedScoredPair``.

Sources, in the order they are preferred:

- **reward-model scores** (``model_scores`` rows of one scorer, or ``score_chosen`` /
  ``score_rejected`` columns in a TRL-format file): the scores are the rewards.
- **human rankings** (the app's ``rankings``): ranks map onto ``ranks_to_rewards``'s scale,
  best = 1.0, worst = 0.0, evenly spaced in between, averaged over annotators who ranked the
  same candidates. Skipped and unranked submissions add nothing; demonstrations are not
  policy samples and are left out.
- **unscored pairs** (a TRL file without score columns): chosen gets ``UNSCORED_GAP``, rejected
  0.0, so REBEL regresses every log-ratio difference onto the same fixed gap.

From each prompt's scored candidates, ``build_pairs`` takes chosen = highest reward and
rejected = lowest (``mode="best_worst"``, REBEL's recipe), or every pair with different rewards
(``mode="all"``). Pairs whose two texts are identical, or whose rewards are equal, teach nothing
and are dropped and counted. Length filters and the held-out split work on token counts the
caller supplies, so everything here is pure and never touches a model.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from data.errors import ConfigError
from data.preferences import PreferenceSourceError
from data.splits import held_out_groups
from data.votes import LABEL_RANKINGS

MODES = ("best_worst", "all")
UNSCORED_GAP = 1.0
"""Reward gap given to a pair that has no scores: r(chosen) = 1.0, r(rejected) = 0.0."""

DROP_IDENTICAL = "identical chosen/rejected texts"
DROP_EQUAL_REWARD = "equal rewards"
DROP_SINGLE = "prompts with fewer than 2 candidates"
DROP_PROMPT_TOO_LONG = "prompt too long"
DROP_RESPONSE_TOO_LONG = "response too long"

Messages = list[dict]


@dataclass(frozen=True)
class ScoredCandidate:
    text: str
    reward: float
    candidate_id: int | None = None


@dataclass(frozen=True)
class PromptCandidates:
    """One prompt with its scored candidates (all sampled from the same policy)."""

    prompt: Messages | str
    candidates: tuple[ScoredCandidate, ...]
    prompt_id: int | None = None
    weight: float = 1.0
    """The mean annotator weight of the votes behind the rewards (1.0 = unweighted)."""


@dataclass(frozen=True)
class ScoredPair:
    prompt: Messages | str
    """Chat messages ending with a user turn, or raw text (no chat template)."""
    chosen: str
    """The preferred response's text."""
    rejected: str
    reward_chosen: float
    reward_rejected: float
    chosen_candidate_id: int | None = None
    rejected_candidate_id: int | None = None
    weight: float = 1.0
    """Training weight (its votes' annotators'); 1.0 = unweighted."""

    @property
    def reward_gap(self) -> float:
        return self.reward_chosen - self.reward_rejected

    def prompt_key(self) -> str:
        """Identifies the prompt: held-out splits keep every pair of a prompt together."""
        return prompt_key(self.prompt)


def prompt_key(prompt: Messages | str) -> str:
    """A prompt as one string (chat messages as canonical JSON)."""
    if isinstance(prompt, str):
        return prompt
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False)


class _DropCounts:
    """Counts of examples left out, by reason, in a ``dropped`` dict."""

    dropped: dict[str, int]

    def drop(self, reason: str, count: int = 1) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + count

    def describe_drops(self) -> str:
        return ", ".join(f"{n} {why}" for why, n in sorted(self.dropped.items()) if n) or "none"


@dataclass
class PairSet(_DropCounts):
    pairs: list[ScoredPair]
    source: str
    dropped: dict[str, int] = field(default_factory=dict)
    """Pairs (or prompts, for DROP_SINGLE) left out, by reason."""


def ranks_to_rewards(ranks: Sequence[int]) -> list[float]:
    """Human ranks (1 = best, equal ranks tie) → rewards on [0, 1]: (worst − rank) / (worst − 1),
    where ``worst`` is the number of candidates ranked. Best = 1.0, worst = 0.0; ranks [1, 2, 3]
    give [1.0, 0.5, 0.0]; all-tied ranks give 0.0 each (and so no pair)."""
    k = len(ranks)
    if k < 2:
        return [0.0] * k
    return [(k - r) / (k - 1) for r in ranks]


def build_pairs(groups: Sequence[PromptCandidates], *, mode: str = "best_worst",
                source: str = "candidates") -> PairSet:
    """Pairs from each prompt's scored candidates; see the module docstring."""
    if mode not in MODES:
        raise ConfigError(f"pair mode must be one of {', '.join(MODES)}, not {mode!r}")
    out = PairSet([], source)
    for group in groups:
        candidates = list(group.candidates)
        if len(candidates) < 2:
            out.drop(DROP_SINGLE)
            continue
        if mode == "best_worst":
            # Stable order: among equal rewards the earlier candidate wins both ends.
            best = max(candidates, key=lambda c: c.reward)
            worst = min(candidates, key=lambda c: c.reward)
            options = [(best, worst)]
        else:
            ordered = sorted(candidates, key=lambda c: -c.reward)
            options = [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:]]
        for a, b in options:
            if a.reward == b.reward:
                out.drop(DROP_EQUAL_REWARD)
            elif a.text.strip() == b.text.strip():
                out.drop(DROP_IDENTICAL)
            else:
                out.pairs.append(ScoredPair(group.prompt, a.text, b.text, a.reward, b.reward,
                                            a.candidate_id, b.candidate_id, group.weight))
    return out


def filter_by_length(pairs: Sequence[ScoredPair], prompt_tokens: Sequence[int],
                     chosen_tokens: Sequence[int], rejected_tokens: Sequence[int], *,
                     max_prompt_tokens: int, max_response_tokens: int
                     ) -> tuple[list[int], dict[str, int]]:
    """Indices of the pairs whose prompt fits ``max_prompt_tokens`` and both responses fit
    ``max_response_tokens``, and the drop counts (a pair counts once, prompt reason first)."""
    kept, dropped = [], {DROP_PROMPT_TOO_LONG: 0, DROP_RESPONSE_TOO_LONG: 0}
    for i in range(len(pairs)):
        if prompt_tokens[i] > max_prompt_tokens:
            dropped[DROP_PROMPT_TOO_LONG] += 1
        elif max(chosen_tokens[i], rejected_tokens[i]) > max_response_tokens:
            dropped[DROP_RESPONSE_TOO_LONG] += 1
        else:
            kept.append(i)
    return kept, {k: v for k, v in dropped.items() if v}


def split_held_out(keys: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices) for items with these prompt keys: ``fraction`` of the
    distinct prompts (at least one when there are two or more) are held out with all their
    items. Deterministic in ``seed``, independent of item order."""
    held = held_out_groups(keys, fraction, seed)
    return ([i for i, k in enumerate(keys) if k not in held],
            [i for i, k in enumerate(keys) if k in held])


# --- sources ------------------------------------------------------------------------------------

def pairs_from_file(source: str, *, split: str = "train", limit: int | None = None) -> PairSet:
    """A TRL-format preference file (see ``data.preferences``) as policy pairs. Optional
    ``score_chosen`` / ``score_rejected`` columns are the rewards; without them each pair gets
    the fixed ``UNSCORED_GAP``. Responses must be one assistant turn (or plain strings)."""
    from data.preferences import DROP_IDENTICAL as FILE_IDENTICAL
    from data.preferences import _row_to_pair
    from data.prompts import PromptSourceError, read_rows

    try:
        rows, label = read_rows(source, split, what="preference")
    except PromptSourceError as exc:
        raise PreferenceSourceError(str(exc)) from None
    if not rows:
        raise PreferenceSourceError(f"{label} contains no rows")
    if "chosen" not in rows[0] or "rejected" not in rows[0]:
        raise PreferenceSourceError(
            f"{label} needs 'chosen' and 'rejected' columns (columns: {', '.join(rows[0])})")
    out = PairSet([], label)
    for number, row in enumerate(rows, start=1):
        if limit is not None and len(out.pairs) >= limit:
            break
        where = f"{label} row {number}"
        pair = _row_to_pair(row, where)
        if isinstance(pair, str):
            out.drop(DROP_IDENTICAL if pair == FILE_IDENTICAL else pair)
            continue
        scored = row.get("score_chosen") is not None and row.get("score_rejected") is not None
        try:
            rewards = ((float(row["score_chosen"]), float(row["score_rejected"])) if scored
                       else (UNSCORED_GAP, 0.0))
        except (TypeError, ValueError):
            raise PreferenceSourceError(f"{where}: score_chosen/score_rejected must be numbers")
        if rewards[0] == rewards[1]:
            out.drop(DROP_EQUAL_REWARD)
            continue
        out.pairs.append(ScoredPair(pair.prompt, _response_text(pair.chosen, where),
                                    _response_text(pair.rejected, where), *rewards))
    return out


def _response_text(response: Messages | str, where: str) -> str:
    if isinstance(response, str):
        return response
    if len(response) != 1 or response[0]["role"] != "assistant":
        raise PreferenceSourceError(
            f"{where}: policy training needs each response to be one assistant turn")
    return response[0]["content"]


def groups_from_scores(db, scorer: str, *, run_id: int | None = None) -> list[PromptCandidates]:
    """Each (prompt, run)'s candidates with ``scorer``'s scores; candidates it did not score are
    left out. Flagged duplicates stay: identical texts are dropped when pairs are built."""
    sql = ("SELECT c.prompt_id, c.run_id, p.messages, c.id, c.text, s.score FROM candidates c "
           "JOIN prompts p ON p.id = c.prompt_id "
           "JOIN model_scores s ON s.candidate_id = c.id AND s.scorer = ? "
           "JOIN generation_runs g ON g.id = c.run_id WHERE g.backend != 'human'")
    params: list = [scorer]
    if run_id is not None:
        sql += " AND c.run_id = ?"
        params.append(run_id)
    grouped: dict[tuple[int, int], list] = defaultdict(list)
    messages: dict[int, str] = {}
    for prompt_id, run, prompt_json, candidate_id, text, score in db.execute(
            sql + " ORDER BY c.prompt_id, c.run_id, c.idx", params):
        grouped[(prompt_id, run)].append(ScoredCandidate(text, float(score), candidate_id))
        messages[prompt_id] = prompt_json
    return [PromptCandidates(json.loads(messages[p]), tuple(cands), p)
            for (p, _), cands in grouped.items()]


def _run_candidate_ids(db, run_id: int) -> set[int]:
    return {row[0] for row in db.execute("SELECT id FROM candidates WHERE run_id = ?", [run_id])}


def groups_from_rankings(db, *, run_id: int | None = None,
                         weights: dict[int, float] | None = None) -> list[PromptCandidates]:
    """Each ranked candidate set with the mean of its annotators' rewards on the
    ``ranks_to_rewards`` scale, from the label votes (``data.votes``); with ``run_id``, only
    sets of that generation run. With ``weights`` (user id → weight ≥ 0, 1.0 for one
    missing) the mean is weighted by annotator, and the set carries its votes' mean weight."""
    in_run = _run_candidate_ids(db, run_id) if run_id is not None else None
    sums: dict[tuple[int, tuple[int, ...]], dict[int, list[float]]] = {}
    vote_weights: dict[tuple[int, tuple[int, ...]], list[float]] = defaultdict(list)
    for prompt_id, ids_json, ranks_json, user_id in db.execute(
            f"SELECT prompt_id, candidate_ids, ranks, user_id FROM {LABEL_RANKINGS} "
            "WHERE ranks IS NOT NULL ORDER BY id"):
        ids, ranks = json.loads(ids_json), json.loads(ranks_json)
        if not ranks or any(r is None for r in ranks):
            continue
        if in_run is not None and not set(ids) <= in_run:
            continue
        key = (prompt_id, tuple(sorted(ids)))
        per_candidate = sums.setdefault(key, defaultdict(list))
        weight = 1.0 if weights is None else float(weights.get(user_id, 1.0))
        vote_weights[key].append(weight)
        for cid, reward in zip(ids, ranks_to_rewards(ranks)):
            per_candidate[cid].append(reward)
    groups = []
    for (prompt_id, ids), rewards in sums.items():
        w = vote_weights[(prompt_id, ids)]
        total = sum(w)
        if weights is not None:
            if total <= 0:  # only weight-0 votes: nothing to learn from this set
                continue
            groups.append(_weighted_group(db, prompt_id, ids, rewards, w))
            continue
        texts = dict(db.execute(
            f"SELECT id, text FROM candidates WHERE id IN ({','.join('?' * len(ids))})",
            list(ids)).fetchall())
        messages = json.loads(db["prompts"].get(prompt_id)["messages"])
        groups.append(PromptCandidates(messages, tuple(
            ScoredCandidate(texts[c], sum(rewards[c]) / len(rewards[c]), c) for c in ids
        ), prompt_id))
    return groups


def _weighted_group(db, prompt_id: int, ids: tuple[int, ...], rewards: dict[int, list[float]],
                    w: list[float]) -> PromptCandidates:
    texts = dict(db.execute(
        f"SELECT id, text FROM candidates WHERE id IN ({','.join('?' * len(ids))})",
        list(ids)).fetchall())
    messages = json.loads(db["prompts"].get(prompt_id)["messages"])
    total = sum(w)
    return PromptCandidates(messages, tuple(
        ScoredCandidate(texts[c], sum(x * y for x, y in zip(rewards[c], w)) / total, c)
        for c in ids), prompt_id, weight=total / len(w))


def ranked_prompts(db, run_id: int) -> int:
    """Prompts of generation run ``run_id`` with at least one complete human ranking."""
    return len({g.prompt_id for g in groups_from_rankings(db, run_id=run_id)})


def pairs_from_db(db, *, scorer: str | None = None, run_id: int | None = None,
                  mode: str = "best_worst", weights: dict[int, float] | None = None,
                  exclude: set[int] | None = None) -> PairSet:
    """Pairs from the app's database: ``scorer``'s scores when given, else human rankings
    (weighted by annotator with ``weights``, see ``groups_from_rankings``). Candidates in
    ``exclude`` are left out before pairs are built (a loop round's previous-policy answers,
    there for the people's verdict only)."""
    label = f"database {_db_file(db)}"
    if "candidates" not in db.table_names():
        raise PreferenceSourceError(f"{label} is not a RankLoop store")
    if scorer is not None:
        groups = groups_from_scores(db, scorer, run_id=run_id)
        what = f"candidates scored by {scorer}" + (f" in run {run_id}" if run_id else "")
    else:
        groups = groups_from_rankings(db, run_id=run_id, weights=weights)
        what = "ranked candidates" + (f" in run {run_id}" if run_id else "")
    if not groups:
        raise PreferenceSourceError(f"{label} has no {what}; rank candidates in the app, score "
                                    "them with `rankloop score`, or pass --data")
    if exclude:
        groups = [replace(g, candidates=tuple(c for c in g.candidates
                                              if c.candidate_id not in exclude))
                  for g in groups]
    return build_pairs(groups, mode=mode, source=f"{label} ({what})")


def _db_file(db) -> str:
    row = db.execute("PRAGMA database_list").fetchone()
    return (row[2] if row else "") or ":memory:"


def require_pairs(pairs: PairSet | RankingSet) -> None:
    """Raises the one-line error for a source that left nothing to train on."""
    if isinstance(pairs, RankingSet):
        if not pairs.groups:
            raise PreferenceSourceError(
                f"no usable rankings in {pairs.source} (dropped: {pairs.describe_drops()})")
        return
    if not pairs.pairs:
        raise PreferenceSourceError(
            f"no usable preference pairs in {pairs.source} (dropped: {pairs.describe_drops()})")


# --- whole rankings (listwise objectives) -------------------------------------------------------

OBJECTIVES = ("pairwise", "listwise")
ANNOTATOR_WEIGHTS = ("none", "reliability")
DROP_UNRANKED = "votes without ranks"


@dataclass(frozen=True)
class RankedGroup:
    """One label vote's full ranking of its item's candidates, ties kept: the example of the
    listwise objectives."""

    prompt: Messages | str
    texts: tuple[str, ...]
    ranks: tuple[int, ...]
    """Aligned with ``texts``; 1 = best, equal ranks tie (a demonstration, when kept, is 0)."""
    rewards: tuple[float, ...]
    """This vote's own ``ranks_to_rewards`` (REBEL's targets); a demonstration gets 1.0."""
    user_id: int
    ranking_id: int
    candidate_ids: tuple[int, ...]
    weight: float = 1.0
    """The annotator's training weight (``with_weights``); 1.0 = unweighted."""

    def prompt_key(self) -> str:
        return prompt_key(self.prompt)


@dataclass
class RankingSet(_DropCounts):
    groups: list[RankedGroup]
    source: str
    dropped: dict[str, int] = field(default_factory=dict)


def rankings_from_db(db, *, run_id: int | None = None,
                     demonstrations: bool = False) -> RankingSet:
    """Every label vote (``data.votes``: latest version, not skipped, not gold) that ranks at
    least two candidates, as one ``RankedGroup``; an all-bad vote without ranks gives nothing
    (counted). ``demonstrations`` keeps the annotator's own answer as a candidate ranked above
    every other (the reward model's reading; policies train only on their own samples)."""
    label = f"database {_db_file(db)}"
    if "candidates" not in db.table_names():
        raise PreferenceSourceError(f"{label} is not a RankLoop store")
    in_run = _run_candidate_ids(db, run_id) if run_id is not None else None
    out = RankingSet([], f"{label} (whole rankings" + (f" in run {run_id})" if run_id else ")"))
    rows = db.execute(
        f"SELECT id, user_id, prompt_id, candidate_ids, ranks, demonstration_id "
        f"FROM {LABEL_RANKINGS} ORDER BY id").fetchall()
    texts: dict[int, str] = {}
    messages: dict[int, Messages] = {}
    for ranking_id, user_id, prompt_id, ids_json, ranks_json, demo_id in rows:
        ids = json.loads(ids_json)
        ranks = json.loads(ranks_json) if ranks_json else None
        if not ranks or any(r is None for r in ranks):
            out.drop(DROP_UNRANKED)
            continue
        if in_run is not None and not set(ids) <= in_run:
            continue
        rewards = ranks_to_rewards(ranks)
        if demonstrations and demo_id is not None:
            ids, ranks, rewards = [demo_id, *ids], [0, *ranks], [1.0, *rewards]
        if len(ids) < 2:
            out.drop(DROP_SINGLE)
            continue
        missing = [c for c in ids if c not in texts]
        if missing:
            texts.update(db.execute(
                f"SELECT id, text FROM candidates WHERE id IN ({','.join('?' * len(missing))})",
                missing).fetchall())
        if prompt_id not in messages:
            messages[prompt_id] = json.loads(db["prompts"].get(prompt_id)["messages"])
        out.groups.append(RankedGroup(
            messages[prompt_id], tuple(texts[c] for c in ids), tuple(ranks), tuple(rewards),
            user_id, ranking_id, tuple(ids)))
    if not out.groups:
        raise PreferenceSourceError(f"{label} has no ranked votes to train on; rank candidates "
                                    "in the app first")
    return out


def with_weights(rankings: RankingSet, weights: dict[int, float]) -> RankingSet:
    """The same rankings, each weighted by its annotator's weight (``weights``: user id →
    weight ≥ 0, e.g. ``data.reliability.annotator_weights``); an annotator missing from
    ``weights`` keeps 1.0."""
    from dataclasses import replace

    return RankingSet([replace(g, weight=float(weights.get(g.user_id, 1.0)))
                       for g in rankings.groups], rankings.source, dict(rankings.dropped))


def read_annotator_weights(db, kind: str) -> dict[int, float] | None:
    """user id → training weight for ``kind`` (``ANNOTATOR_WEIGHTS``): None for ``none``,
    the joint reliability model's weights (``data.reliability``) for ``reliability``."""
    if kind not in ANNOTATOR_WEIGHTS:
        raise ConfigError(f"annotator weights must be one of {', '.join(ANNOTATOR_WEIGHTS)}, "
                          f"not {kind!r}")
    if kind == "none":
        return None
    from data.reliability import annotator_weights

    return annotator_weights(db)


def comparison_weights(db, source_ids, weights: dict[int, float]) -> list[float]:
    """Each database pair's weight: its vote's annotator's weight from ``weights`` (user id →
    weight; 1.0 for one missing). ``source_ids``: the pairs' ``comparison:<id>``."""
    users = dict(db.execute(
        "SELECT c.id, r.user_id FROM comparisons c JOIN rankings r ON r.id = c.ranking_id"))
    out = []
    for source_id in source_ids:
        if not (source_id or "").startswith("comparison:"):
            raise ConfigError("annotator weights need pairs from the app's database")
        out.append(float(weights.get(users[int(source_id.split(":", 1)[1])], 1.0)))
    return out
