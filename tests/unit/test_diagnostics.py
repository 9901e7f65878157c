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


def test_moving_too_far_warns_as_much_as_not_moving():
    # The REBEL case: a gap of 33.3 against a target of 4.0 (833 %), KL 1.6.
    rows = [{"train/logratio_chosen": 16.65, "train/logratio_rejected": -16.65,
             "train/kl": 1.6}] * 4
    d = rebel_diagnosis(rows, eta=4.0, mean_reward_gap=1.0, learning_rate=2e-5, epochs=2)
    assert d.moved and d.overshot
    assert d.values["gap_share"] == pytest.approx(33.3 / 4.0)
    assert "moved too far" in d.warning and "more than 3× its target" in d.warning
    assert "KL 1.600 to the starting policy on the training pairs, above 1" in d.warning
    assert "lower --lr (now 2e-05) or --epochs (now 2)" in d.warning
    # Near the target and a small KL: no warning either way.
    fine = [{"train/logratio_chosen": 2.0, "train/logratio_rejected": -2.0, "train/kl": 0.3}] * 4
    ok = rebel_diagnosis(fine, eta=4.0, mean_reward_gap=1.0, learning_rate=2e-5, epochs=2)
    assert ok.moved and not ok.overshot and ok.warning is None

    runaway = dpo_diagnosis([0.1, 2.0, 6.0, 9.0], [0.01, 0.2, 0.5, 0.6], learning_rate=5e-6)
    assert runaway.overshot and "margin ran to 9.000, past 5" in runaway.warning
    assert "raise --beta" in runaway.warning
    steady = dpo_diagnosis([0.1, 0.5, 1.0, 1.5], [0.01, 0.1, 0.2, 0.3], learning_rate=5e-6)
    assert not steady.overshot and steady.warning is None

    # One pass: every logged gap precedes its pair's own update, so it stays near 0 while the
    # policy moves; the KL says it moved.
    one_pass = [{"train/logratio_chosen": -0.3, "train/logratio_rejected": -0.25,
                 "train/kl": 0.7}] * 4 + [{"eval/kl": 0.48}]
    moved = rebel_diagnosis(one_pass, eta=4.0, mean_reward_gap=0.8, learning_rate=2e-5,
                            epochs=1)
    assert moved.moved and moved.warning is None
    still = rebel_diagnosis([{"train/logratio_chosen": 0.0, "train/logratio_rejected": 0.0,
                              "train/kl": 0.0}] * 4, eta=4.0, mean_reward_gap=0.8,
                            learning_rate=0.0, epochs=1)
    assert not still.moved and "changed almost nothing" in still.warning
    # Held-out pairs' gap decides where there are some: a second pass fits the pairs it
    # repeats far past their target, which is no measure of the policy.
    fitted_gap = [{"train/logratio_chosen": 8.0, "train/logratio_rejected": -8.0,
                   "train/kl": 9.0}] * 4
    held_rows = [{"eval/logratio_chosen": 0.3, "eval/logratio_rejected": -0.2,
                  "eval/kl": 0.4}]
    h = rebel_diagnosis(fitted_gap + held_rows, eta=4.0, mean_reward_gap=0.5,
                        learning_rate=2e-5, epochs=2, held_out_reward_gap=0.25)
    assert h.summary == ("REBEL reached a log-ratio gap of 0.500 on held-out pairs against its "
                         "target η·Δr = 1.000 (50%); 16.000 on the pairs trained on (800%)")
    assert h.moved and not h.overshot and h.warning is None
    assert h.values["train_gap_share"] == pytest.approx(8.0)
    runaway_held = rebel_diagnosis(
        fitted_gap + [{"eval/logratio_chosen": 2.0, "eval/logratio_rejected": -2.0,
                       "eval/kl": 0.4}], eta=4.0, mean_reward_gap=0.5, learning_rate=2e-5,
        epochs=2, held_out_reward_gap=0.25)
    assert runaway_held.overshot and "more than 3× its target" in runaway_held.warning
    # Where held-out pairs were evaluated, their KL decides, not the fitted pairs' one.
    fitted = [{"train/logratio_chosen": 2.0, "train/logratio_rejected": -2.0, "train/kl": 9.9},
              {"step": 4, "eval/kl": 0.2}, {"step": 8, "eval/kl": 0.7}]
    held = rebel_diagnosis(fitted, eta=4.0, mean_reward_gap=1.0, learning_rate=2e-5, epochs=2)
    assert not held.overshot and held.values["held_out_kl"] == 0.7
    far = rebel_diagnosis(fitted + [{"eval/kl": 1.3}], eta=4.0, mean_reward_gap=1.0,
                          learning_rate=2e-5, epochs=2)
    assert "KL 1.300 to the starting policy on held-out prompts, above 1" in far.warning
    assert not dpo_diagnosis([0.1, 0.5, 1.0, 1.5], [4.0], learning_rate=5e-6,
                             held_out_kls=[0.3, 0.6]).overshot
    assert dpo_diagnosis([0.1, 0.5, 1.0, 1.5], [0.3], learning_rate=5e-6,
                         held_out_kls=[1.2]).overshot

    rows = [{"objective/reward": r, "objective/kl": k} for r, k in ((0, 0.1), (1, 0.8), (2, 1.5))]
    p = ppo_diagnosis(rows, learning_rate=1e-5, steps=20)
    assert p.overshot and "raise --kl-coef" in p.warning

    h = held_out_diagnosis(2.4, learning_rate=2e-5)
    assert h.overshot and "moved far from the old one" in h.warning
    assert not held_out_diagnosis(0.4, learning_rate=2e-5).overshot
