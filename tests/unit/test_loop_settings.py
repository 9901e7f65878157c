"""Each algorithm's settings in the loop, the learning rate that follows the model's size, and
the KL budget that ends a pair recipe's training."""

import argparse

import pytest
import torch

from data.errors import ConfigError


def test_learning_rate_is_interpolated_log_log_between_anchors_and_held_outside():
    from training.models import size_scaled_learning_rate

    anchors = ((1e8, 1e-5), (1e10, 1e-7))
    assert size_scaled_learning_rate(anchors, 10**8) == pytest.approx(1e-5)
    assert size_scaled_learning_rate(anchors, 10**9) == pytest.approx(1e-6)  # halfway in logs
    assert size_scaled_learning_rate(anchors, 10**10) == pytest.approx(1e-7)
    assert size_scaled_learning_rate(anchors, 10**6) == 1e-5  # no larger than the small anchor
    assert size_scaled_learning_rate(anchors, 10**12) == 1e-7


def test_each_algorithm_has_its_own_settings_and_the_reference_recipe_is_one_name_away():
    from policy.loop import LoopConfig, algorithm_settings

    def loop(algorithm, **kw):
        feedback = {"feedback": "reward-model", "scorer": "bt:rm"} if algorithm == "ppo" else \
            {"feedback": "human"}
        return LoopConfig(db="r.db", output="out", algorithm=algorithm, **feedback, **kw)

    rebel, dpo, ppo = (loop(a).settings for a in ("rebel", "dpo", "ppo"))
    assert type(rebel).__name__ == "RebelLoopSettings" and not hasattr(rebel, "beta")
    assert hasattr(dpo, "beta") and not hasattr(dpo, "eta") and hasattr(ppo, "target_kl")
    assert rebel.kl_budget == dpo.kl_budget == ppo.target_kl == 0.8
    reference = loop("rebel", recipe="reference-8b").settings
    assert (reference.learning_rate, reference.eta, reference.epochs, reference.kl_budget) == \
        (3e-7, 1.0, 1, None)
    assert loop("ppo", recipe="reference-8b").settings.steps == 20
    # An option set by hand changes that setting only; None keeps the recipe's.
    changed = algorithm_settings("rebel", "reference-8b", learning_rate=1e-6, eta=None)
    assert (changed.learning_rate, changed.eta) == (1e-6, 1.0)
    with pytest.raises(ConfigError, match="rebel has no setting beta"):
        algorithm_settings("rebel", beta=0.2)
    with pytest.raises(ConfigError, match="recipe must be one of"):
        algorithm_settings("rebel", "huge")
    with pytest.raises(ConfigError, match="dpo needs DPOLoopSettings"):
        loop("dpo", settings=rebel)


def test_the_learning_rate_follows_the_model_size_per_algorithm_unless_set(tiny_model_dir):
    from policy import dpo, ppo, rebel
    from policy.loop import LoopConfig, algorithm_settings
    from training.models import model_parameters, size_scaled_learning_rate

    weights = model_parameters(tiny_model_dir)
    rates = {}
    for name, module in (("rebel", rebel), ("dpo", dpo), ("ppo", ppo)):
        extra = {"scorer": "bt:rm"} if name == "ppo" else {"feedback": "human"}
        config = LoopConfig(db="r.db", output="o", algorithm=name, **extra)
        rate, why = config.learning_rate_for(tiny_model_dir)
        assert rate == size_scaled_learning_rate(module.LEARNING_RATES, weights)
        assert "model's size" in why
        rates[name] = rate
        config.settings = algorithm_settings(name, learning_rate=3e-6)
        assert config.learning_rate_for(tiny_model_dir) == (3e-6, "set")
    assert rates["rebel"] != rates["dpo"]  # the scales differ: one shared default cannot fit
    # At 8B each default is the reference value.
    assert size_scaled_learning_rate(rebel.LEARNING_RATES, 8.03e9) == pytest.approx(3e-7)


def test_kl_budget_stops_once_the_mean_over_its_window_reaches_it():
    from policy.pair_training import KLBudget

    budget = KLBudget(0.5, window=8, kl_stat=2)

    def stats(kl_sum, pairs):  # [loss, pairs, kl]
        return torch.tensor([0.0, pairs, kl_sum])

    assert budget(1, stats(4 * 0.9, 4)) is None  # a window of 8 pairs is not full yet
    assert budget(2, stats(4 * 0.0, 4)) is None  # (3.6 + 0) / 8 = 0.45 < 0.5
    reason = budget(3, stats(4 * 1.2, 4))  # the first step leaves: (0 + 4.8) / 8 = 0.6
    assert reason == ("stopped at step 3: KL 0.600 on training pairs (no held-out ones) "
                      "reached the budget of 0.5 nats")
    assert budget.reached == pytest.approx(0.6)


def test_held_out_kl_budget_checks_every_few_steps_and_stops_at_the_check_that_reaches_it():
    from policy.pair_training import HeldOutKLBudget

    held_out = iter([0.2, 0.55, 0.9])
    checked = []
    budget = HeldOutKLBudget(0.8, every=2, measure=lambda: {"eval/kl": next(held_out)})
    step_stats = torch.tensor([0.0, 4.0, 99.0])  # the training pairs' KL plays no part
    for step in range(1, 6):
        assert budget(step, step_stats) is None
        checked.append(budget.measured_step)
    assert checked == [None, 2, 2, 4, 4]
    assert budget(6, step_stats) == ("stopped at step 6: held-out KL 0.900 reached the "
                                     "budget of 0.8 nats")
    assert budget.reached == 0.9 and budget.measured_step == 6


def _loop_args(*argv):
    from launch.cmd_policy import _add_loop_algorithm_options

    parser = argparse.ArgumentParser()
    parser.add_argument("--algorithm", default="rebel")
    _add_loop_algorithm_options(parser)
    return parser.parse_args(list(argv))


def test_loop_options_set_the_chosen_algorithm_and_refuse_another_ones():
    from launch.cmd_policy import loop_settings

    assert loop_settings(_loop_args("--eta", "2")).eta == 2.0
    ppo = loop_settings(_loop_args("--algorithm", "ppo", "--kl-budget", "0.3", "--ppo-steps",
                                   "3"))
    assert (ppo.target_kl, ppo.steps) == (0.3, 3)
    assert loop_settings(_loop_args("--algorithm", "dpo", "--no-kl-budget")).kl_budget is None
    reference = loop_settings(_loop_args("--recipe", "reference-8b", "--epochs", "3"))
    assert (reference.learning_rate, reference.epochs) == (3e-7, 3)
    with pytest.raises(ConfigError, match="--beta not used by --algorithm rebel"):
        loop_settings(_loop_args("--beta", "0.2"))
    with pytest.raises(ConfigError, match="--batch-size, --epochs not used by --algorithm ppo"):
        loop_settings(_loop_args("--algorithm", "ppo", "--epochs", "2", "--batch-size", "2"))
