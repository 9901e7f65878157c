import math

import numpy as np
import pytest
from scipy.optimize import minimize

from data.errors import ConfigError
from data.ratings import (PRIOR, SCALE, Vote, count_votes, fit_ratings, length_feature,
                          win_probability)


def simulate(strengths: dict[str, float], n: int, seed: int, *, gamma: float = 0.0,
             tokens: dict[str, float] | None = None, tie_share: float = 0.4) -> list[dict]:
    """Votes from known logit strengths. A tie comes with probability tie_share * p * (1 - p)
    and takes half of itself from each side, so that a's expected score (wins + ties / 2) is
    exactly p = sigmoid(s_a - s_b + gamma * x): the quantity the ratings estimate."""
    rng = np.random.default_rng(seed)
    names = list(strengths)
    out = []
    for _ in range(n):
        a, b = rng.choice(len(names), 2, replace=False)
        model_a, model_b = names[a], names[b]
        vote = {"model_a": model_a, "model_b": model_b}
        x = 0.0
        if tokens is not None:
            ta = max(1, int(rng.normal(tokens[model_a], 0.15 * tokens[model_a])))
            tb = max(1, int(rng.normal(tokens[model_b], 0.15 * tokens[model_b])))
            vote.update(tokens_a=ta, tokens_b=tb)
            x = (ta - tb) / (ta + tb)
        p = 1 / (1 + math.exp(-(strengths[model_a] - strengths[model_b] + gamma * x)))
        tie = tie_share * p * (1 - p)
        u = rng.random()
        vote["winner"] = ("model_a" if u < p - tie / 2 else
                          "tie" if u < p + tie / 2 else "model_b")
        out.append(vote)
    return out


def logits(r, names):
    """Ratings back to logit strengths with mean 0."""
    s = np.array([r.rating[n] for n in names]) / SCALE
    return s - s.mean()


def oracle(votes, names, prior, lengths=False):
    """The same penalised likelihood written vote by vote, each vote an observation with
    outcome 1, 0 or 1/2, maximised by scipy's trust-region Newton."""
    index = {n: i for i, n in enumerate(names)}
    k = len(names)
    design = np.zeros((len(votes), k + 1))
    y = np.zeros(len(votes))
    for row, v in enumerate(votes):
        design[row, index[v["model_a"]]] += 1
        design[row, index[v["model_b"]]] -= 1
        if lengths:
            raw = (v["tokens_a"] - v["tokens_b"]) / (v["tokens_a"] + v["tokens_b"])
            design[row, k] = round(raw * 100) / 100
        y[row] = {"model_a": 1.0, "model_b": 0.0}.get(v["winner"], 0.5)

    def nll(theta):
        eta = design @ theta
        return (np.logaddexp(0, eta) - y * eta).sum() + prior / 2 * theta @ theta

    def grad(theta):
        p = 1 / (1 + np.exp(-(design @ theta)))
        return design.T @ (p - y) + prior * theta

    def hess(theta):
        p = 1 / (1 + np.exp(-(design @ theta)))
        return (design * (p * (1 - p))[:, None]).T @ design + prior * np.eye(k + 1)

    res = minimize(nll, np.zeros(k + 1), jac=grad, hess=hess, method="trust-exact",
                   options={"gtol": 1e-12})
    s = res.x[:k]
    return s - s.mean(), res.x[k]


STRENGTHS = {"base": 0.0, "iter1": 0.4, "iter2": 0.9, "other": -0.3}


# (a) an independent implementation


@pytest.mark.parametrize("prior", [PRIOR, 0.5])
def test_fit_equals_per_vote_logistic_regression(prior):
    votes = simulate(STRENGTHS, 600, seed=1)
    votes += [dict(v, winner="both_bad") for v in votes[:40]]
    names = sorted(STRENGTHS)
    expected, _ = oracle(votes, names, prior)
    got = fit_ratings(votes, resamples=0, prior=prior)
    assert np.abs(logits(got, names) - expected).max() < 1e-6


def test_length_controlled_fit_equals_per_vote_logistic_regression():
    tokens = {"base": 200, "iter1": 260, "iter2": 300, "other": 150}
    votes = simulate(STRENGTHS, 800, seed=2, gamma=1.0, tokens=tokens)
    names = sorted(STRENGTHS)
    expected, gamma = oracle(votes, names, PRIOR, lengths=True)
    got = fit_ratings(votes, resamples=0, length_control=True)
    assert np.abs(logits(got, names) - expected).max() < 1e-6
    assert abs(got.length_coef / SCALE - gamma) < 1e-6
    # and the covariate matters: without it the strengths differ by far more than that
    plain = fit_ratings(votes, resamples=0)
    assert np.abs(logits(plain, names) - expected).max() > 1e-2


def test_fit_equals_choix():
    choix = pytest.importorskip("choix", reason="reference package not installed")
    votes = simulate(STRENGTHS, 500, seed=3)
    names = sorted(STRENGTHS)
    index = {n: i for i, n in enumerate(names)}
    # choix takes (winner, loser) pairs: every vote twice, a tie as one win each way. That
    # doubles the likelihood, so choix's penalty alpha * |s|^2 matches ours at alpha = prior.
    data = []
    for v in votes:
        a, b = index[v["model_a"]], index[v["model_b"]]
        if v["winner"] == "model_a":
            data += [(a, b), (a, b)]
        elif v["winner"] == "model_b":
            data += [(b, a), (b, a)]
        else:
            data += [(a, b), (b, a)]
    prior = 1e-3
    expected = choix.opt_pairwise(len(names), data, alpha=prior, method="Newton-CG", tol=1e-12)
    got = fit_ratings(votes, resamples=0, prior=prior)
    assert np.abs(logits(got, names) - (expected - expected.mean())).max() < 1e-6


# (b) small cases by hand


def votes_of(a, b, wins_a, wins_b, ties=0):
    return ([Vote(a, b, "model_a")] * wins_a + [Vote(a, b, "model_b")] * wins_b
            + [Vote(b, a, "tie")] * ties)


EXACT = 1e-12  # a prior this small leaves the maximum likelihood answer to 1e-10 logits


def test_two_policies_differ_by_the_log_odds():
    r = fit_ratings(votes_of("a", "b", 7, 3), resamples=0, prior=EXACT)
    assert (r.rating["a"] - r.rating["b"]) / SCALE == pytest.approx(math.log(7 / 3), abs=1e-6)
    assert r.rating["a"] + r.rating["b"] == pytest.approx(2000, abs=1e-9)
    # ties count half: 6 wins, 2 losses, 4 ties is 8 against 4
    r = fit_ratings(votes_of("a", "b", 6, 2, ties=4), resamples=0, prior=EXACT)
    assert (r.rating["a"] - r.rating["b"]) / SCALE == pytest.approx(math.log(2), abs=1e-6)
    # 400 points is ten to one; the side a vote was shown on does not matter
    r = fit_ratings(votes_of("b", "a", 1, 10), resamples=0, baseline="b", prior=EXACT)
    assert r.rating["b"] == 1000
    assert r.rating["a"] == pytest.approx(1400, abs=1e-4)
    assert r.win_probability("a", "b") == pytest.approx(10 / 11, abs=1e-8)
    # the default prior moves these by about 1e-6 logits, no more
    r = fit_ratings(votes_of("b", "a", 1, 10), resamples=0, baseline="b")
    assert r.rating["a"] == pytest.approx(1400, abs=1e-3)


def test_three_policies_in_a_chain_add_up():
    # a beats b 3:1 and b beats c 3:1, never a against c: the odds multiply
    votes = votes_of("a", "b", 6, 2) + votes_of("b", "c", 6, 2)
    r = fit_ratings(votes, resamples=0, baseline="c", prior=EXACT)
    assert r.rating["b"] == pytest.approx(1000 + SCALE * math.log(3), abs=1e-4)
    assert r.rating["a"] == pytest.approx(1000 + 2 * SCALE * math.log(3), abs=1e-4)
    assert r.ranked() == ["a", "b", "c"]


def test_win_matrix_and_votes_per_pair():
    votes = votes_of("a", "b", 3, 1, ties=2) + [Vote("c", "a", "both_bad")]
    counts = count_votes(votes)
    assert counts.policies == ("a", "b", "c")
    assert counts.games.tolist() == [[0, 6, 1], [6, 0, 0], [1, 0, 0]]
    m = counts.win_matrix()
    assert m[0, 1] == pytest.approx(4 / 6) and m[1, 0] == pytest.approx(2 / 6)
    assert m[0, 2] == m[2, 0] == 0.5
    assert np.isnan(m[1, 2]) and np.isnan(m[0, 0])
    assert win_probability(1000, 1000) == 0.5


def test_mappings_and_vote_tuples_agree():
    votes = simulate(STRENGTHS, 200, seed=4)
    tuples = [Vote(v["model_a"], v["model_b"], v["winner"]) for v in votes]
    assert fit_ratings(votes, resamples=50).ci_low == fit_ratings(tuples, resamples=50).ci_low


def test_length_feature():
    assert length_feature(300, 100) == 0.5
    assert length_feature(100, 300) == -0.5
    assert length_feature(200, 100) == pytest.approx(0.33)  # twice as long: 1/3, kept to 0.01
    assert length_feature(1000, 2000) == length_feature(100, 200)


# (c) bootstrap intervals cover the truth at about the nominal rate


def test_bootstrap_intervals_cover_the_true_strengths():
    names = sorted(STRENGTHS)
    s = np.array([STRENGTHS[n] for n in names])
    truth = 1000 + SCALE * (s - s.mean())
    covered = []
    widths = []
    for seed in range(200):
        r = fit_ratings(simulate(STRENGTHS, 600, seed=100 + seed), resamples=400, seed=seed)
        low = np.array([r.ci_low[n] for n in names])
        high = np.array([r.ci_high[n] for n in names])
        covered += list((low <= truth) & (truth <= high))
        widths.append(high - low)
    coverage = np.mean(covered)
    print(f"coverage of 95% intervals: {coverage:.3f}, mean width {np.mean(widths):.1f}")
    # 800 intervals, 4 to a dataset: the coverage's standard error is about 0.01
    assert 0.92 <= coverage <= 0.98, coverage
    # and no wider than the sampling error: 2 * 1.96 standard errors, where one policy's
    # standard error (its 300 votes near even, against a mean it is a quarter of) is about
    # SCALE * 2 / sqrt(300) * 3 / 4 = 15 points
    assert 53 < np.mean(widths) < 66


@pytest.mark.parametrize("counts", [
    np.array([[300.0, 200.0, 50.0], [10.0, 400.0, 40.0]]),  # few cells: one multinomial draw
    np.tile([3.0, 1.0, 2.0], (60, 1)),  # many cells (length control): votes drawn one by one
])
def test_a_resample_is_the_votes_drawn_with_replacement(counts):
    from data.ratings import _resample

    draws = _resample(np.random.default_rng(0), counts, 4000)
    total = counts.sum()
    assert draws.shape == (4000, *counts.shape)
    assert (draws.sum(axis=(1, 2)) == total).all()
    share = counts / total
    # each cell's count is Binomial(N, share): its mean and variance
    assert np.abs(draws.mean(0) - counts).max() < 4 * np.sqrt(total * share.max() / 4000)
    var = total * share * (1 - share)
    assert np.allclose(draws.var(0), var, rtol=0.15)


def test_baseline_interval_is_relative_to_the_baseline():
    votes = simulate(STRENGTHS, 400, seed=5)
    r = fit_ratings(votes, baseline="base", resamples=200)
    assert r.rating["base"] == r.ci_low["base"] == r.ci_high["base"] == 1000
    mean = fit_ratings(votes, resamples=0)
    shift = mean.rating["base"] - 1000
    assert r.rating["iter2"] == pytest.approx(mean.rating["iter2"] - shift, abs=1e-6)
    assert r.ci_low["iter2"] < r.rating["iter2"] < r.ci_high["iter2"]
    # seeded: the same seed gives the same intervals
    assert fit_ratings(votes, baseline="base", resamples=200).ci_low == r.ci_low


# (d) length control


def test_length_control_sees_a_policy_that_is_only_longer():
    # "long" is exactly as good as "good" but answers twice as long, and people favour length
    strengths = {"base": 0.0, "good": 0.6, "long": 0.6}
    tokens = {"base": 250, "good": 250, "long": 500}
    gamma = 1.5
    votes = simulate(strengths, 6000, seed=6, gamma=gamma, tokens=tokens)
    plain = fit_ratings(votes, resamples=300)
    assert plain.ci_low["long"] > plain.ci_high["good"]  # ranked above, and clearly
    controlled = fit_ratings(votes, resamples=300, length_control=True)
    assert controlled.ci_low["long"] <= controlled.rating["good"] <= controlled.ci_high["long"]
    assert abs(controlled.rating["long"] - controlled.rating["good"]) < 30
    low, high = controlled.length_ci
    assert 0 < low <= gamma * SCALE <= high
    # where length does not sway people, the coefficient's interval covers 0
    neutral = fit_ratings(simulate(strengths, 3000, seed=7, tokens=tokens), resamples=300,
                          length_control=True)
    assert neutral.length_ci[0] <= 0 <= neutral.length_ci[1]


# (e) edge cases


def test_one_policy_and_a_policy_without_votes():
    alone = fit_ratings([], policies=["base"])
    assert math.isnan(alone.rating["base"]) and alone.votes == {"base": 0}
    r = fit_ratings(votes_of("a", "b", 5, 5), policies=["a", "b", "c"], resamples=100)
    assert math.isnan(r.rating["c"]) and math.isnan(r.ci_low["c"]) and r.votes["c"] == 0
    # the mean anchor is over rated policies only
    assert r.rating["a"] == pytest.approx(1000) and r.rating["b"] == pytest.approx(1000)
    assert r.ranked()[-1] == "c"
    with pytest.raises(ConfigError, match="no votes"):
        fit_ratings(votes_of("a", "b", 5, 5), policies=["a", "b", "c"], baseline="c")


def test_all_ties():
    r = fit_ratings(votes_of("a", "b", 0, 0, ties=5) + votes_of("b", "c", 0, 0, ties=3),
                    resamples=100)
    for name in "abc":
        assert r.rating[name] == pytest.approx(1000, abs=1e-6)
        assert r.ci_low[name] == pytest.approx(1000, abs=1e-6)
        assert r.ci_high[name] == pytest.approx(1000, abs=1e-6)


def test_a_policy_that_always_wins_has_a_finite_rating():
    votes = votes_of("champ", "a", 20, 0) + votes_of("champ", "b", 15, 0) + votes_of("a", "b",
                                                                                       6, 4)
    r = fit_ratings(votes, resamples=200)
    assert all(math.isfinite(r.rating[n]) and math.isfinite(r.ci_low[n])
               and math.isfinite(r.ci_high[n]) for n in r.policies)
    assert r.ranked() == ["champ", "a", "b"]
    assert r.rating["champ"] - r.rating["a"] > 1000  # far above, held only by the prior
    # the others are still measured by their own votes: a beat b 6:4
    assert (r.rating["a"] - r.rating["b"]) / SCALE == pytest.approx(math.log(1.5), abs=1e-3)
    assert fit_ratings(votes_of("x", "y", 1, 0), resamples=0).rating["x"] < 1e4


def test_groups_never_compared_are_each_centred_on_the_mean():
    votes = votes_of("a", "b", 3, 1) + votes_of("c", "d", 1, 1)
    r = fit_ratings(votes, resamples=0, prior=EXACT)
    assert r.rating["a"] + r.rating["b"] == pytest.approx(2000, abs=1e-6)
    assert r.rating["c"] == pytest.approx(1000, abs=1e-6) == r.rating["d"]
    assert (r.rating["a"] - r.rating["b"]) / SCALE == pytest.approx(math.log(3), abs=1e-6)


@pytest.mark.parametrize("vote, message", [
    ({"model_a": "a", "model_b": "b", "winner": "a"}, "winner 'a' is not one of"),
    ({"model_a": "a", "model_b": "b", "winner": None}, "winner None"),
    ({"model_a": "a", "model_b": "a", "winner": "tie"}, "compared with itself"),
    ({"model_a": "a", "winner": "tie"}, "policy names"),
])
def test_invalid_votes_are_refused(vote, message):
    with pytest.raises(ConfigError, match=message):
        fit_ratings([Vote("a", "b", "tie"), vote])
    with pytest.raises(ConfigError, match=message):
        count_votes([vote])


def test_other_invalid_inputs_are_refused():
    votes = votes_of("a", "b", 2, 1)
    with pytest.raises(ConfigError, match="tokens_a and tokens_b"):
        fit_ratings(votes, length_control=True)
    with pytest.raises(ConfigError, match="tokens_a and tokens_b"):
        fit_ratings([Vote("a", "b", "tie", 0, 0)], length_control=True)
    with pytest.raises(ConfigError, match="tokens_a and tokens_b"):
        fit_ratings([Vote("a", "b", "tie", "12", 30)], length_control=True)
    with pytest.raises(ConfigError, match="not in the list"):
        fit_ratings(votes, policies=["a"])
    with pytest.raises(ConfigError, match="baseline 'z'"):
        fit_ratings(votes, baseline="z")
    with pytest.raises(ConfigError, match="level"):
        fit_ratings(votes, level=95)
