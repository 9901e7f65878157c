"""Training diagnostics: did the policy move, and which setting to change when it did not."""

import pytest

from policy.diagnostics import (
    dpo_diagnosis,
    held_out_diagnosis,
    ppo_diagnosis,
    rebel_diagnosis,
)


def _rebel_rows(gaps):
    return [{"step": i + 1, "train/logratio_chosen": g / 2, "train/logratio_rejected": -g / 2,
             "train/kl": 0.001 * i} for i, g in enumerate(gaps)]


def test_rebel_reports_the_reached_gap_against_its_target():
    # Last quarter of 8 steps = the last 2: mean gap (0.6 + 0.8) / 2 = 0.7; target 2 × 0.5 = 1.
    d = rebel_diagnosis(_rebel_rows([0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8]), eta=2.0,
                        mean_reward_gap=0.5, learning_rate=1e-5, epochs=2)
    assert d.moved and d.warning is None
    assert d.values["reached_gap"] == pytest.approx(0.7)
    assert d.values["target_gap"] == pytest.approx(1.0)
    assert d.values["gap_share"] == pytest.approx(0.7)
    assert "0.700 against its target η·Δr = 1.000 (70%)" in d.summary


def test_an_iteration_that_changed_nothing_warns_and_names_the_setting():
    d = rebel_diagnosis(_rebel_rows([0.0, 0.001, 0.002, 0.003]), eta=1.0, mean_reward_gap=0.9,
                        learning_rate=3e-7, epochs=1)
    assert not d.moved
    assert "changed almost nothing" in d.warning
    assert "raise --lr (now 3e-07) or --epochs (now 1)" in d.warning

    rows = [{"objective/reward": 1.0, "objective/kl": 0.0001} for _ in range(8)]
    p = ppo_diagnosis(rows, learning_rate=1e-6, steps=20)
    assert not p.moved and "raise --lr (now 1e-06) or --ppo-steps (now 20)" in p.warning

    h = held_out_diagnosis(0.002, learning_rate=3e-7)
    assert not h.moved and "--lr (now 3e-07)" in h.warning
    assert held_out_diagnosis(None, learning_rate=1.0) is None
    assert held_out_diagnosis(0.5, learning_rate=1.0).warning is None


def test_ppo_reports_kl_and_the_reward_gain():
    rows = [{"objective/reward": r, "objective/kl": k}
            for r, k in zip([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4],
                            [0, .01, .02, .03, .04, .05, .06, .07])]
    p = ppo_diagnosis(rows, learning_rate=1e-5, steps=8)
    # First quarter mean (0.0 + 0.2) / 2 = 0.1, last quarter (1.2 + 1.4) / 2 = 1.3.
    assert p.moved and p.values["reward_gain"] == pytest.approx(1.2)
    assert p.values["kl"] == pytest.approx(0.07)
    with pytest.raises(ValueError):
        ppo_diagnosis([{"step": 1}], learning_rate=1.0, steps=1)


def test_dpo_margin_diagnosis():
    d = dpo_diagnosis([0.0, 0.0, 0.5, 1.0], [0.0, 0.02], learning_rate=5e-7)
    assert d.moved and d.values["margin_gain"] == pytest.approx(1.0)
    flat = dpo_diagnosis([0.0, 0.0, 0.0, 0.0], [0.0], learning_rate=5e-7)
    assert not flat.moved and "--lr (now 5e-07)" in flat.warning
