"""Ratings of policies from blind pairwise votes: Bradley-Terry strengths on the Elo-like scale
of Chatbot Arena, bootstrap intervals, and a length-controlled variant.

A vote is one blind comparison in the Arena layout: ``model_a``, ``model_b``, ``winner`` (one of
``WINNERS``) and, for the length-controlled fit, ``tokens_a`` / ``tokens_b``. Votes may be
mappings with those keys or ``Vote`` tuples.

The model. The probability that policy a is preferred to b is
``sigmoid(s_a - s_b + gamma * x)``, where ``x`` is the length feature (``length_feature``) in
the length-controlled fit and 0 otherwise. Strengths ``s`` are fitted by maximum likelihood,
with every tie counted as half a win for each side: the likelihood Arena's leaderboard uses,
and the one under which the fitted win probability of a over b is their expected score.
Ratings are ``1000 + SCALE * (s - s_anchor)``: 400 points is a factor of 10 in the odds, and
the anchor is a named baseline or the mean strength.

The prior. A ridge of ``PRIOR / 2 * |theta|^2`` on the logit scale (a Gaussian prior of
variance 1e6, the same order as Arena's ``C=1e6``) is always applied. Where every policy both
wins and loses it moves the fit by about 1e-6 logits at a dozen votes, less with more; where
maximum likelihood has no answer it gives a finite one: a policy that won every vote sits far
above the others (how far is the prior's doing, not the votes'), and two groups of policies
never compared with each other are each centred on the same mean (which says nothing about how
the groups compare).

The bootstrap. Votes are aggregated into cells (an unordered pair of policies, a length-feature
value, an outcome); a resample of the N votes with replacement is then a count per cell (one
multinomial draw of N over the cells, or N draws of a vote, whichever is cheaper), and all
resamples are refitted at once by damped Newton iterations on a (policies + 1)-square system.
Intervals are percentile intervals. Like any bootstrap it cannot see what the data never
showed: a pair that always tied gets an interval of width 0, and a policy that always won an
interval set by the prior. A policy that a resample happens to leave out is put at the mean
by the prior there, which widens the interval of a policy with very few votes, as it should.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from data.errors import ConfigError

WINNERS = ("model_a", "model_b", "tie", "both_bad")
SCALE = 400.0 / math.log(10.0)
"""Rating points per logit: 400 points is a factor of 10 in the odds of winning."""
INITIAL = 1000.0
PRIOR = 1e-6
"""Ridge on the logit-scale parameters (see the module docstring)."""
LENGTH_STEPS = 100
"""The length feature is kept to 1/100 (about a 2% difference in length), so that votes collapse
into at most 201 cells per pair and the bootstrap reweights cells, not votes; a finer covariate
could not be told apart by any feasible number of votes."""


class Vote(NamedTuple):
    model_a: str
    model_b: str
    winner: str
    tokens_a: int | None = None
    tokens_b: int | None = None


def length_feature(tokens_a, tokens_b):
    """``(len_a - len_b) / (len_a + len_b)``, rounded to ``1 / LENGTH_STEPS``.

    This is Arena's style-control feature for length. It is scale free (100 against 200 tokens
    counts as 1,000 against 2,000), it changes sign when the sides swap, and it is bounded in
    [-1, 1]: it equals ``tanh(log(len_a / len_b) / 2)``, the log ratio with its tails tamed,
    so one near-empty answer cannot dominate the coefficient. It is not standardised (Arena
    standardises), so the strengths stay the ratings at equal length and the coefficient keeps
    a unit: a policy answering twice as long as its opponent has x = 1/3.
    """
    a = np.asarray(tokens_a, dtype=float)
    b = np.asarray(tokens_b, dtype=float)
    return np.round((a - b) / (a + b) * LENGTH_STEPS) / LENGTH_STEPS


def _field(vote, name: str, default=None):
    if type(vote) is dict or isinstance(vote, Mapping):
        return vote.get(name, default)
    return getattr(vote, name, default)


@dataclass(frozen=True)
class _Votes:
    """Votes as arrays: policy indices, outcome (0 a wins, 1 b wins, 2 tie), length feature."""
    policies: tuple[str, ...]
    a: np.ndarray
    b: np.ndarray
    outcome: np.ndarray
    x: np.ndarray | None


def _read_votes(votes: Iterable, policies: Sequence[str] | None, lengths: bool) -> _Votes:
    a_names, b_names, outcomes, tokens = [], [], [], []
    for n, vote in enumerate(votes):
        model_a, model_b, winner = (_field(vote, k) for k in ("model_a", "model_b", "winner"))
        if winner not in WINNERS:
            raise ConfigError(f"vote {n}: winner {winner!r} is not one of {', '.join(WINNERS)}")
        if not isinstance(model_a, str) or not isinstance(model_b, str) or not model_a \
                or not model_b:
            raise ConfigError(f"vote {n}: model_a and model_b must be policy names")
        if model_a == model_b:
            raise ConfigError(f"vote {n}: {model_a!r} is compared with itself")
        a_names.append(model_a)
        b_names.append(model_b)
        # both_bad is a tie: it prefers neither side, and both failing is evidence against a
        # wide gap between them; Arena's leaderboard counts "tie (bothbad)" the same way.
        outcomes.append({"model_a": 0, "model_b": 1}.get(winner, 2))
        if lengths:
            ta, tb = _field(vote, "tokens_a"), _field(vote, "tokens_b")
            if not all(isinstance(t, (int, float, np.integer, np.floating))
                       and not isinstance(t, bool) and t >= 0 for t in (ta, tb)) \
                    or ta + tb <= 0:
                raise ConfigError(f"vote {n}: the length-controlled rating needs tokens_a and "
                                  f"tokens_b (token counts, not both 0), got {ta!r}, {tb!r}")
            tokens.append((ta, tb))
    seen = list(dict.fromkeys(a_names + b_names))
    if policies is None:
        names = tuple(sorted(seen))
    else:
        names = tuple(dict.fromkeys(policies))
        unknown = sorted(set(seen) - set(names))
        if unknown:
            raise ConfigError(f"votes name policies not in the list given: {', '.join(unknown)}")
    index = {name: i for i, name in enumerate(names)}
    x = None
    if lengths:
        t = np.asarray(tokens, dtype=float).reshape(-1, 2)
        x = length_feature(t[:, 0], t[:, 1])
    return _Votes(names, np.array([index[m] for m in a_names], dtype=np.int64),
                  np.array([index[m] for m in b_names], dtype=np.int64),
                  np.array(outcomes, dtype=np.int64), x)


@dataclass(frozen=True)
class VoteCounts:
    """Per ordered pair: ``wins[i, j]`` votes where policy i beat j, ``ties[i, j]`` ties
    (both_bad included) between them, symmetric."""
    policies: tuple[str, ...]
    wins: np.ndarray
    ties: np.ndarray

    @property
    def games(self) -> np.ndarray:
        """Votes per pair (symmetric)."""
        return self.wins + self.wins.T + self.ties

    def win_matrix(self) -> np.ndarray:
        """Share of votes row beat column, a tie counting half; NaN where they never met."""
        games = self.games
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(games > 0, (self.wins + 0.5 * self.ties) / games, np.nan)


def count_votes(votes: Iterable, policies: Sequence[str] | None = None) -> VoteCounts:
    """Win and tie counts per pair, for the leaderboard's win matrix and votes per pair."""
    v = _read_votes(votes, policies, lengths=False)
    k = len(v.policies)
    wins = np.zeros((k, k), dtype=np.int64)
    ties = np.zeros((k, k), dtype=np.int64)
    np.add.at(wins, (v.a[v.outcome == 0], v.b[v.outcome == 0]), 1)
    np.add.at(wins, (v.b[v.outcome == 1], v.a[v.outcome == 1]), 1)
    np.add.at(ties, (v.a[v.outcome == 2], v.b[v.outcome == 2]), 1)
    return VoteCounts(v.policies, wins, ties + ties.T)


@dataclass(frozen=True)
class Ratings:
    """Ratings on the Arena scale, with percentile-bootstrap intervals.

    A policy without votes has NaN for its rating and interval: nothing says where it stands.
    ``length_coef`` (length-controlled fit only) is in rating points per unit of the length
    feature: a policy answering twice as long as its opponent (x = 1/3) gains
    ``length_coef / 3`` points in that comparison; ``rating`` is then the rating at equal
    length.
    """
    policies: tuple[str, ...]
    rating: dict[str, float]
    ci_low: dict[str, float]
    ci_high: dict[str, float]
    votes: dict[str, int]
    anchor: str | None
    """The baseline held at 1000, or None when the mean of the rated policies is."""
    level: float
    resamples: int
    length_coef: float | None = None
    length_ci: tuple[float, float] | None = None

    def win_probability(self, a: str, b: str) -> float:
        """Predicted share of votes a wins over b (ties as half), at equal length."""
        return win_probability(self.rating[a], self.rating[b])

    def ranked(self) -> list[str]:
        """Rated policies, best first; those without votes last."""
        return sorted(self.policies, key=lambda p: (math.isnan(self.rating[p]),
                                                    -np.nan_to_num(self.rating[p])))


def win_probability(rating_a: float, rating_b: float) -> float:
    """Share of votes a rating wins over another, ties counted half, under the fitted model."""
    return float(1.0 / (1.0 + 10.0 ** ((rating_b - rating_a) / 400.0)))


@dataclass(frozen=True)
class _Cells:
    """Votes aggregated by (pair i < j, length feature): counts (C, 3) of i wins, j wins, ties."""
    i: np.ndarray
    j: np.ndarray
    x: np.ndarray
    counts: np.ndarray
    k: int


def _cells(v: _Votes, rated: np.ndarray) -> _Cells:
    """Orient every vote as the pair (i < j) in the rated policies' numbering, then count."""
    new = np.full(len(v.policies), -1)
    new[rated] = np.arange(len(rated))
    a, b = new[v.a], new[v.b]
    flip = a > b
    i, j = np.where(flip, b, a), np.where(flip, a, b)
    x = np.zeros(len(a)) if v.x is None else np.where(flip, -v.x, v.x)
    outcome = np.where(flip & (v.outcome < 2), 1 - v.outcome, v.outcome)
    steps = np.rint(x * LENGTH_STEPS).astype(np.int64) + LENGTH_STEPS
    key = (i * len(rated) + j) * (2 * LENGTH_STEPS + 1) + steps
    keys, cell = np.unique(key, return_inverse=True)
    counts = np.zeros((len(keys), 3))
    np.add.at(counts, (cell, outcome), 1)
    pair, steps = np.divmod(keys, 2 * LENGTH_STEPS + 1)
    return _Cells(pair // len(rated), pair % len(rated),
                  (steps - LENGTH_STEPS) / LENGTH_STEPS, counts, len(rated))


class _Design:
    """The fixed structure of one set of cells: parameters are k strengths, then gamma.

    Cells come sorted by pair (``_cells`` numbers them so), so sums over a pair's cells are
    ``np.add.reduceat`` over contiguous runs and everything costs O(resamples x cells)."""

    def __init__(self, c: _Cells):
        k, kk = c.k, c.k + 1
        pairs, self.starts, self.pair = np.unique(c.i * k + c.j, return_index=True,
                                                  return_inverse=True)
        p = len(pairs)
        pi, pj = pairs // k, pairs % k
        # strengths -> each pair's difference s_i - s_j, and back (the gradient's scatter)
        self.incidence = np.zeros((p, kk))
        self.incidence[np.arange(p), pi] = 1.0
        self.incidence[np.arange(p), pj] = -1.0
        # Hessian = sum over cells of v d d^T with d = e_i - e_j + x e_gamma: gathered per pair
        # (sums of v, v x, v x^2), then spread onto the (k+1)^2 entries by one small map.
        spread = np.zeros((3 * p, kk * kk))
        r = np.arange(p)
        for (u, w), sign in (((pi, pi), 1), ((pj, pj), 1), ((pi, pj), -1), ((pj, pi), -1)):
            spread[r, u * kk + w] += sign
        for (u, w), sign in (((pi, k), 1), ((k, pi), 1), ((pj, k), -1), ((k, pj), -1)):
            spread[p + r, np.asarray(u) * kk + np.asarray(w)] += sign
        spread[2 * p + r, k * kk + k] = 1.0
        self.spread = spread
        self.x = c.x
        self.k = k
        # The strengths' mean is fixed by the ridge alone (the likelihood is blind to it), so
        # the Hessian is nearly singular along it; adding u u^T there changes no Newton step
        # (the gradient is orthogonal to u) and keeps the solve well conditioned.
        u = np.r_[np.ones(k), 0.0] / math.sqrt(k)
        self.uu = np.outer(u, u)

    def per_pair(self, values):
        return np.add.reduceat(values, self.starts, axis=1)

    def eta(self, theta):
        return (theta @ self.incidence.T)[:, self.pair] + theta[:, self.k:] * self.x

    @staticmethod
    def objective(eta, theta, n, w, prior):
        """Penalised log-likelihood per row; softplus written out (twice as fast as logaddexp)."""
        softplus = np.maximum(eta, 0.0) + np.log1p(np.exp(-np.abs(eta)))
        return (w * eta - n * softplus).sum(1) - 0.5 * prior * (theta ** 2).sum(1)

    def fit(self, n, w, prior, theta=None, max_iter=200, tol=1e-11):
        """Penalised maximum likelihood for each row of ``n`` (votes per cell, (B, C)) and
        ``w`` (wins of the cell's first policy, ties as half): returns theta (B, k + 1)."""
        b = n.shape[0]
        theta = np.zeros((b, self.k + 1)) if theta is None else np.array(theta, dtype=float)
        eta = self.eta(theta)
        f = self.objective(eta, theta, n, w, prior)
        eye = prior * np.eye(self.k + 1)
        for _ in range(max_iter):
            p = 0.5 + 0.5 * np.tanh(0.5 * eta)  # the logistic function, without overflow
            resid = w - n * p
            grad = self.per_pair(resid) @ self.incidence - prior * theta
            grad[:, self.k] += resid @ self.x
            v = n * p * (1.0 - p)
            vx = v * self.x
            sums = np.hstack([self.per_pair(v), self.per_pair(vx), self.per_pair(vx * self.x)])
            hess = (sums @ self.spread).reshape(b, self.k + 1, self.k + 1)
            scale = max(1.0, float(np.abs(hess).max()))
            step = np.linalg.solve(hess + eye + scale * self.uu, grad[:, :, None])[:, :, 0]
            # Damped: halve each resample's step until its penalised likelihood does not fall
            # (a plain Newton step can overshoot where the data nearly separate).
            for _ in range(40):
                trial = theta + step
                eta_trial = self.eta(trial)
                f_trial = self.objective(eta_trial, trial, n, w, prior)
                worse = f_trial < f - 1e-12 * (1.0 + np.abs(f))
                if not worse.any():
                    break
                step[worse] *= 0.5
            theta, eta, f = trial, eta_trial, f_trial
            if np.abs(step).max() < tol:
                break
        return theta


def _anchored(theta: np.ndarray, k: int, anchor: int | None) -> np.ndarray:
    s = theta[:, :k]
    ref = s.mean(1, keepdims=True) if anchor is None else s[:, anchor:anchor + 1]
    return INITIAL + SCALE * (s - ref)


def _resample(rng: np.random.Generator, counts: np.ndarray, size: int) -> np.ndarray:
    """``size`` resamples of the votes with replacement, as counts per cell (size, C, 3).

    Both ways are exact: one multinomial draw over the cells (costs a binomial draw per cell),
    or drawing the votes themselves (costs one draw per vote), whichever is cheaper; the
    length-controlled fit has many cells, the plain one few."""
    flat = counts.ravel()
    total = int(flat.sum())
    if total > 20 * flat.size:
        return rng.multinomial(total, flat / total, size=size).reshape(size, *counts.shape) \
            .astype(float)
    category = np.repeat(np.arange(flat.size), flat.astype(np.int64))
    picked = category[rng.integers(0, total, (size, total))]
    picked += np.arange(size)[:, None] * flat.size
    return np.bincount(picked.ravel(), minlength=size * flat.size) \
        .reshape(size, *counts.shape).astype(float)


def fit_ratings(votes: Iterable, *, policies: Sequence[str] | None = None,
                baseline: str | None = None, length_control: bool = False,
                resamples: int = 1000, level: float = 0.95, seed: int = 0,
                prior: float = PRIOR) -> Ratings:
    """Bradley-Terry ratings with percentile-bootstrap intervals.

    ``policies`` lists every policy to report (one without votes gets NaN); by default, those
    the votes name. ``baseline`` is held at 1000 (its interval is then [1000, 1000]: the others'
    are relative to it); by default the mean of the rated policies is. ``length_control`` adds
    the length feature as a covariate, so that a policy preferred only for answering longer
    loses that advantage in its rating, and reports the length coefficient. ``resamples=0``
    skips the bootstrap (intervals NaN).
    """
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level must be between 0 and 1, got {level}")
    if resamples < 0:
        raise ConfigError(f"resamples must be 0 or more, got {resamples}")
    if prior <= 0:
        raise ConfigError(f"prior must be positive (it keeps separated data finite), got {prior}")
    v = _read_votes(votes, policies, lengths=length_control)
    names = v.policies
    if baseline is not None and baseline not in names:
        raise ConfigError(f"baseline {baseline!r} is not among the policies")
    played = np.zeros(len(names), dtype=np.int64)
    np.add.at(played, v.a, 1)
    np.add.at(played, v.b, 1)
    votes_of = {name: int(played[i]) for i, name in enumerate(names)}
    rated = np.flatnonzero(played)
    nan = {name: math.nan for name in names}
    if len(rated) == 0:
        return Ratings(names, dict(nan), dict(nan), dict(nan), votes_of, baseline, level,
                       resamples, *((math.nan, (math.nan, math.nan)) if length_control else ()))
    anchor = None
    if baseline is not None:
        if played[names.index(baseline)] == 0:
            raise ConfigError(f"baseline {baseline!r} has no votes, so it cannot anchor ratings")
        anchor = int(np.searchsorted(rated, names.index(baseline)))
    cells = _cells(v, rated)
    design = _Design(cells)
    k = cells.k

    def n_w(counts):
        return counts.sum(-1), counts[..., 0] + 0.5 * counts[..., 2]

    point = design.fit(*n_w(cells.counts[None]), prior)
    rating = _anchored(point, k, anchor)[0]
    gamma = point[0, k] * SCALE
    low = high = np.full(k, np.nan)
    gamma_ci = (math.nan, math.nan)
    if resamples:
        rng = np.random.default_rng(seed)
        # memory: a chunk holds (resamples, cells) floats, or (resamples, votes) draws
        size = cells.counts.size
        chunk = max(1, 4_000_000 // max(size, min(int(cells.counts.sum()), 20 * size)))
        draws = []
        for start in range(0, resamples, chunk):
            size = min(chunk, resamples - start)
            counts = _resample(rng, cells.counts, size)
            theta = design.fit(*n_w(counts), prior, theta=np.repeat(point, size, axis=0))
            draws.append(np.hstack([_anchored(theta, k, anchor), theta[:, k:] * SCALE]))
        draws = np.vstack(draws)
        tail = (1.0 - level) / 2.0
        low, high = np.quantile(draws, [tail, 1.0 - tail], axis=0)
        gamma_ci = (float(low[k]), float(high[k]))
    out = {name: dict(nan) for name in ("rating", "low", "high")}
    for r, idx in enumerate(rated):
        out["rating"][names[idx]] = float(rating[r])
        out["low"][names[idx]] = float(low[r])
        out["high"][names[idx]] = float(high[r])
    return Ratings(names, out["rating"], out["low"], out["high"], votes_of, baseline, level,
                   resamples, float(gamma) if length_control else None,
                   gamma_ci if length_control else None)
