"""How much each annotator's rankings can be trusted, estimated jointly with the items.

The model. Each item ``i`` has a latent strength ``s[i, c]`` per candidate; each annotator
``a`` has a temperature ``beta[a]`` (inverse noise). Annotator ``a`` ranks item ``i`` as a
Plackett-Luce draw with utilities ``beta[a] * s[i, c]``: the best candidate is picked with
probability softmax over all candidates, the next from the rest, and so on. (This is exactly
how ``data.simulate`` draws noisy rankings, with ``beta = 1 / noise``.) Ties are a group
picked together from what remains (Breslow's form: each tied member counts as a pick from the
same remaining set); the last group, being all that remains, carries no choice and adds
nothing. ``beta`` near 0 is an annotator whose order says nothing about the candidates (a
random clicker); a large ``beta`` is one who orders them as the consensus does; a negative
``beta`` orders them backwards.

Fitting. ``beta`` and ``s`` are fitted together by maximising the log posterior with scipy's
L-BFGS-B (analytic gradients) with BLAS held to one thread: the problem is small, and a
threaded BLAS on every iteration made one fit 5-40 times slower on a busy machine. A unit
normal prior on the free strengths sets their scale (only the products ``beta * s`` are seen)
and a weak normal prior on ``beta`` keeps a flawless annotator finite. Gold items anchor the
scale and direction: their strengths are not free but the standardised gold ranks (mean 0,
variance 1 over the item's candidates, better rank = higher strength), so agreeing with gold
raises ``beta`` directly. Only votes that can say something about the annotator are fitted:
votes on gold items and on items that at least two annotators ranked. An item ranked by one
annotator alone can always be explained by its own strengths, whatever that annotator's
reliability, so it is left out.

Weight. The training weight is the model's expected agreement above chance:
``2 * mean(sigmoid(beta * |s_x - s_y|)) - 1`` over the candidate pairs of the fitted items
(clipped at 0). It is 0 for ``beta = 0`` (what a random clicker's ``beta`` is estimated as,
so nobody has to decide it), approaches 1 as ``beta`` grows, and is monotone in ``beta``, so
it orders annotators as the temperatures do. An annotator none of whose votes could be
checked (no overlap, no gold) is given the median weight of those who could (1.0 when
nobody could): not evidence of carelessness, not of care either.

Speed (active seconds per vote) is not a feature of the model: it has no ground truth of its
own here, and the reliability is recovered from overlap and gold without it (the simulation
tests). Implausibly fast votes are flagged in the console instead (``data.agreement``).

Uses numpy, scipy and threadpoolctl.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from data.votes import RankingRecord, latest, pseudonym


@dataclass(frozen=True)
class AnnotatorReliability:
    annotator: str
    """As the records name them (pseudonym or name)."""
    user_id: int | None
    temperature: float | None
    """Fitted ``beta``: 0 = says nothing, larger = more reliable, negative = backwards; None
    when no vote of theirs could be checked."""
    weight: float
    """Training weight in [0, 1] (module docstring)."""
    votes: int
    """Ranked label or gold votes (latest versions, not skipped)."""
    votes_used: int
    """Of those, the ones fitted (gold items, or items at least two annotators ranked)."""
    gold_votes: int

    @property
    def checked(self) -> bool:
        return self.temperature is not None


@dataclass(frozen=True)
class ReliabilityFit:
    annotators: dict[str, AnnotatorReliability]
    strengths: dict[Hashable, dict[int, float]] = field(default_factory=dict)
    """Fitted (or, for gold items, fixed) candidate strengths per item key."""
    converged: bool = True
    log_posterior: float = 0.0

    def weights_by_user(self) -> dict[int, float]:
        return {a.user_id: a.weight for a in self.annotators.values() if a.user_id is not None}


def item_key(record: RankingRecord) -> Hashable:
    """The item a vote judged (votes stored before items existed: their prompt and run)."""
    if record.item_id is not None:
        return ("item", record.item_id)
    return ("prompt", record.prompt_id, record.source_run)


def _ranked(records: Iterable[RankingRecord]) -> list[RankingRecord]:
    return [r for r in latest(records)
            if not r.skipped and r.ranks is not None and len(r.candidate_ids) >= 2]


def _standardised(values: list[float]) -> list[float]:
    arr = np.asarray(values, dtype=float)
    sd = arr.std()
    return list((arr - arr.mean()) / sd) if sd > 0 else [0.0] * len(values)


def expected_weight(temperature: float, gaps: np.ndarray) -> float:
    """``2 * mean(sigmoid(temperature * gap)) - 1`` over absolute strength gaps, in [0, 1)."""
    if temperature <= 0 or gaps.size == 0:
        return 0.0
    return float(np.clip(2.0 * np.mean(1.0 / (1.0 + np.exp(-temperature * gaps))) - 1.0,
                         0.0, 1.0))


def fit_reliability(records: Iterable[RankingRecord], *, strength_prior_sd: float = 1.0,
                    temperature_prior_sd: float = 5.0, max_iter: int = 1000) -> ReliabilityFit:
    """Fits every annotator's temperature and weight together with the items' strengths from
    the latest ranked votes in ``records`` (the whole log may be passed: superseded versions
    and skips are ignored; gold votes are used, they anchor the fit)."""
    votes = _ranked(records)
    annotators_of: dict[Hashable, set[str]] = defaultdict(set)
    for r in votes:
        annotators_of[item_key(r)].add(r.annotator)
    used = [r for r in votes
            if (r.is_gold and r.gold_ranks) or len(annotators_of[item_key(r)]) >= 2]

    names = sorted({r.annotator for r in votes})
    user_of = {r.annotator: r.user_id for r in votes}
    ann_index = {n: i for i, n in enumerate(sorted({r.annotator for r in used}))}

    # Strength slots: one per (item, candidate) seen in a fitted vote; gold ones are fixed.
    slot: dict[tuple[Hashable, int], int] = {}
    fixed_value: dict[int, float] = {}
    mean_rank: dict[int, list[float]] = defaultdict(list)
    for r in used:
        key = item_key(r)
        if r.is_gold and r.gold_ranks:
            values = _standardised([-g for g in r.gold_ranks])
            for c, v in zip(r.candidate_ids, values):
                fixed_value[slot.setdefault((key, c), len(slot))] = v
        for c, rank in zip(r.candidate_ids, _standardised([-x for x in r.ranks])):
            mean_rank[slot.setdefault((key, c), len(slot))].append(rank)
    n_slots = len(slot)
    free = np.array([i not in fixed_value for i in range(n_slots)], dtype=bool)
    base = np.zeros(n_slots)
    for i, v in fixed_value.items():
        base[i] = v
    # Start the free strengths at the annotators' mean standardised order, which also picks
    # the sign (s, beta) and (-s, -beta) would otherwise share on items without gold.
    init_s = np.array([np.mean(mean_rank[i]) if i in mean_rank else 0.0
                       for i in range(n_slots)])[free]

    # Stages: each tied group picked from what remains; chosen members and remaining sets
    # are flattened with a stage id so that sums per stage are bincounts.
    chosen_slot, chosen_stage, risk_slot, risk_stage, stage_ann, stage_size = [], [], [], [], [], []
    for r in used:
        key = item_key(r)
        order = sorted(zip(r.ranks, r.candidate_ids))
        levels = sorted({rank for rank, _ in order})
        for level in levels[:-1]:  # the last group has no choice left
            stage = len(stage_ann)
            group = [slot[(key, c)] for rank, c in order if rank == level]
            remaining = [slot[(key, c)] for rank, c in order if rank >= level]
            chosen_slot += group
            chosen_stage += [stage] * len(group)
            risk_slot += remaining
            risk_stage += [stage] * len(remaining)
            stage_ann.append(ann_index[r.annotator])
            stage_size.append(len(group))
    chosen_slot, chosen_stage = np.array(chosen_slot, int), np.array(chosen_stage, int)
    risk_slot, risk_stage = np.array(risk_slot, int), np.array(risk_stage, int)
    stage_ann, stage_size = np.array(stage_ann, int), np.array(stage_size, float)
    n_stages, n_ann, n_free = len(stage_ann), len(ann_index), int(free.sum())

    def unpack(theta):
        s = base.copy()
        s[free] = theta[:n_free]
        return s, theta[n_free:]

    def objective(theta):
        s, beta = unpack(theta)
        b_chosen = beta[stage_ann[chosen_stage]]
        b_risk = beta[stage_ann[risk_stage]]
        u_risk = b_risk * s[risk_slot]
        peak = np.full(n_stages, -np.inf)
        np.maximum.at(peak, risk_stage, u_risk)
        e = np.exp(u_risk - peak[risk_stage])
        total = np.bincount(risk_stage, e, n_stages)
        lse = peak + np.log(total)
        loglik = np.sum(b_chosen * s[chosen_slot]) - np.sum(stage_size * lse)
        # d loglik / d u: 1 for each chosen member, -size * softmax over the remaining set.
        p = e / total[risk_stage] * stage_size[risk_stage]
        grad_s = (np.bincount(chosen_slot, b_chosen, n_slots)
                  - np.bincount(risk_slot, p * b_risk, n_slots))
        grad_b = (np.bincount(stage_ann[chosen_stage], s[chosen_slot], n_ann)
                  - np.bincount(stage_ann[risk_stage], p * s[risk_slot], n_ann))
        s_free = theta[:n_free]
        logpost = (loglik - 0.5 * np.sum(s_free ** 2) / strength_prior_sd ** 2
                   - 0.5 * np.sum(beta ** 2) / temperature_prior_sd ** 2)
        grad = np.concatenate([grad_s[free] - s_free / strength_prior_sd ** 2,
                               grad_b - beta / temperature_prior_sd ** 2])
        return -logpost, -grad

    converged, log_posterior = True, 0.0
    s_fit, beta_fit = base, np.zeros(n_ann)  # no choice in any vote: the prior's mode
    if n_stages:
        theta0 = np.concatenate([init_s, np.ones(n_ann)])
        # Imported here: scipy.optimize takes about half a second to import, and the console
        # imports this module on start-up.
        from scipy.optimize import minimize

        with threadpool_limits(limits=1, user_api="blas"):
            result = minimize(objective, theta0, jac=True, method="L-BFGS-B",
                              options={"maxiter": max_iter, "gtol": 1e-6, "ftol": 1e-13})
        converged, log_posterior = bool(result.success), float(-result.fun)
        s_fit, beta_fit = unpack(result.x)

    strengths: dict[Hashable, dict[int, float]] = defaultdict(dict)
    for (key, c), i in slot.items():
        strengths[key][c] = float(s_fit[i])
    gaps = np.concatenate([np.abs(np.subtract.outer(v, v))[np.triu_indices(len(v), 1)]
                           for v in (np.array(list(m.values())) for m in strengths.values())]
                          ) if strengths else np.zeros(0)
    gaps = gaps[gaps > 1e-9]

    counts = defaultdict(lambda: [0, 0, 0])
    for r in votes:
        counts[r.annotator][0] += 1
    for r in used:
        counts[r.annotator][1] += 1
        counts[r.annotator][2] += bool(r.is_gold and r.gold_ranks)
    fitted = {n: float(beta_fit[i]) for n, i in ann_index.items()}
    fitted_weights = {n: expected_weight(b, gaps) for n, b in fitted.items()}
    fallback = statistics.median(fitted_weights.values()) if fitted_weights else 1.0
    annotators = {
        n: AnnotatorReliability(
            annotator=n, user_id=user_of[n], temperature=fitted.get(n),
            weight=fitted_weights.get(n, fallback), votes=counts[n][0],
            votes_used=counts[n][1], gold_votes=counts[n][2])
        for n in names}
    return ReliabilityFit(annotators=annotators, strengths=dict(strengths),
                          converged=converged, log_posterior=log_posterior)


def fit_records(db, *, keep_annotator_names: bool = False) -> list[RankingRecord]:
    """The latest ranked votes as records holding what the fit reads (ids, ranks, gold), without
    the texts ``read_rankings`` loads: the console refits on every new vote."""
    order: dict[int, list[int]] = {}
    out = []
    for (ranking_id, user_id, name, prompt_id, item_id, run_id, is_gold, gold_json, ids_json,
         ranks_json) in db.execute(
            "SELECT r.id, r.user_id, u.name, r.prompt_id, r.item_id, i.run_id, i.is_gold, "
            "i.gold_ranks, r.candidate_ids, r.ranks FROM latest_rankings r "
            "JOIN users u ON u.id = r.user_id LEFT JOIN items i ON i.id = r.item_id "
            "WHERE r.skipped = 0 AND r.ranks IS NOT NULL ORDER BY r.id"):
        ids = json.loads(ids_json)
        gold = None
        if gold_json:
            if item_id not in order:
                order[item_id] = [c for (c,) in db.execute(
                    "SELECT c.id FROM candidates c JOIN items i ON c.prompt_id = i.prompt_id "
                    "AND c.run_id = i.run_id WHERE i.id = ? ORDER BY c.idx", [item_id])]
            by_id = dict(zip(order[item_id], json.loads(gold_json)))
            gold = [by_id[c] for c in ids]
        out.append(RankingRecord(
            ranking_id=ranking_id, annotator=name if keep_annotator_names else pseudonym(user_id),
            prompt_id=prompt_id, prompt=[], item_id=item_id, source_run=run_id,
            is_gold=bool(is_gold), gold_ranks=gold, candidate_ids=ids, candidates=[],
            ranks=json.loads(ranks_json), has_tie=False, all_bad=False, skipped=False,
            rationale=None, demonstration_id=None, demonstration=None, shown_at=None,
            submitted_at=0.0, user_id=user_id))
    return out


def reliability(db, *, keep_annotator_names: bool = False) -> ReliabilityFit:
    """``fit_reliability`` over every vote in the store."""
    return fit_reliability(fit_records(db, keep_annotator_names=keep_annotator_names))


def annotator_weights(db) -> dict[int, float]:
    """user id -> training weight in [0, 1], for every annotator with a ranked vote."""
    return reliability(db).weights_by_user()
