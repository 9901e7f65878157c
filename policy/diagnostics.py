"""Did the policy move? Pure functions over what the recipes already log (``metrics.jsonl``
rows) and the loop's held-out report, each returning a ``Diagnosis`` whose warning names the
setting to change when an iteration changed almost nothing.

- REBEL regresses the log-ratio gap between chosen and rejected onto η × their reward gap, so
  the gap it *reached* against that *target* says how far the update went: a few percent
  means the learning rate or the number of steps is too small for the data.
- PPO (and DPO) have no target to reach; their KL to the starting policy, the reward gain over
  the run and (DPO) the implicit reward margin say whether anything changed.
- On held-out prompts, KL(new ‖ old) near 0 means the new policy samples what the old one did,
  whatever the training metrics say.

Each warns both ways: moving too far is as much a sign of a wrong setting as not moving. A
REBEL gap far past its target (the regression is not fitting, it is running away), a DPO
margin past the point where σ(margin) says anything more, or a KL to the starting policy past
``MAX_KL`` per iteration all warn, naming the setting to lower.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

# Below these, an iteration "changed almost nothing".
MIN_GAP_SHARE = 0.1
"""REBEL: reached log-ratio gap below this share of its target."""
MIN_KL = 0.01
"""KL per response (nats) to the starting policy, in training or on held-out prompts."""
MIN_REWARD_GAIN = 0.01
"""PPO: reward gain (last quarter of steps minus first quarter), relative to the spread of
the first quarter's rewards plus this floor."""

# Above these, an iteration "moved too far".
MAX_GAP_SHARE = 3.0
"""REBEL: reached log-ratio gap above this multiple of its target."""
MAX_DPO_MARGIN = 5.0
"""DPO: implicit reward margin (nats) past which σ(margin) > 0.99: the pairs cannot ask for
more, so the policy is only pushed away from the reference."""
MAX_KL = 1.0
"""KL per response (nats) to the iteration's starting policy, in training or on held-out
prompts: one iteration should refine the policy, not replace it."""


@dataclass
class Diagnosis:
    algorithm: str
    moved: bool
    summary: str
    """One line: what was measured."""
    values: dict[str, float] = field(default_factory=dict)
    warning: str | None = None
    """Set when the policy barely moved or moved too far: what to change, by its
    command-line name."""
    overshot: bool = False
    """The policy moved too far (the warning says which measure crossed its bound)."""


def _quarter_mean(values: Sequence[float], last: bool) -> float:
    n = max(1, len(values) // 4)
    part = values[-n:] if last else values[:n]
    return sum(part) / len(part)


def _series(metrics: Sequence[dict], key: str) -> list[float]:
    return [float(row[key]) for row in metrics if row.get(key) is not None]


def _kl_too_far(train_kl: float, held_out_kls: Sequence[float]) -> list[str]:
    """The KL to the starting policy past ``MAX_KL``, as a phrase (or none). The held-out
    estimate decides where there is one: the training pairs' responses are the ones the steps
    fit, so their KL runs ahead of how far the policy moved elsewhere."""
    if held_out_kls:
        kl, where = held_out_kls[-1], "on held-out prompts"
    else:
        kl, where = train_kl, "on the training pairs"
    return [f"KL {kl:.3f} to the starting policy {where}, above {MAX_KL:g}"] if kl > MAX_KL \
        else []


def rebel_diagnosis(metrics: Sequence[dict], *, eta: float, mean_reward_gap: float,
                    learning_rate: float, epochs: int,
                    held_out_reward_gap: float | None = None) -> Diagnosis:
    """``metrics``: REBEL's logged rows. The gap it reached against its target η × the mean
    reward gap: on the held-out pairs at the last evaluation (``eval/logratio_chosen`` −
    ``eval/logratio_rejected``, target from ``held_out_reward_gap``) where there are some,
    else on the training pairs over the last quarter of the logged steps. The pairs trained
    on are fitted, not measured: on a second pass their gap runs several times past the
    target while held-out pairs move by a fraction of it, so they decide only without a
    held-out set (and are shown beside it)."""
    chosen = _series(metrics, "train/logratio_chosen")
    rejected = _series(metrics, "train/logratio_rejected")
    if not chosen or len(chosen) != len(rejected):
        raise ValueError("REBEL metrics need train/logratio_chosen and train/logratio_rejected")
    # With one pass over the pairs, each logged gap is taken before that pair's own update:
    # the gap the policy carries over to pairs it has not trained on yet, not the fit.
    train_reached = _quarter_mean([c - r for c, r in zip(chosen, rejected)], last=True)
    train_target = eta * mean_reward_gap
    train_share = train_reached / train_target if train_target else 0.0
    held_chosen = _series(metrics, "eval/logratio_chosen")
    held_rejected = _series(metrics, "eval/logratio_rejected")
    kl = _series(metrics, "train/kl")
    held_kl = _series(metrics, "eval/kl")
    values = {"train_gap": train_reached, "train_gap_share": train_share,
              "train_kl": kl[-1] if kl else 0.0}
    if held_chosen and held_rejected:
        reached = held_chosen[-1] - held_rejected[-1]
        target = eta * (mean_reward_gap if held_out_reward_gap is None else held_out_reward_gap)
        share = reached / target if target else 0.0
        summary = (f"REBEL reached a log-ratio gap of {reached:.3f} on held-out pairs against "
                   f"its target η·Δr = {target:.3f} ({100 * share:.0f}%); "
                   f"{train_reached:.3f} on the pairs trained on ({100 * train_share:.0f}%)")
    else:
        reached, target, share = train_reached, train_target, train_share
        summary = (f"REBEL reached a log-ratio gap of {reached:.3f} against its target "
                   f"η·Δr = {target:.3f} ({100 * share:.0f}%)")
    values.update(reached_gap=reached, target_gap=target, gap_share=share)
    if held_kl:
        values["held_out_kl"] = held_kl[-1]
    # The KL says whether the policy moved at all, where the gap (on pairs not yet trained
    # on) may stay small: held-out where measured.
    kl = values.get("held_out_kl", values["train_kl"])
    moved = share >= MIN_GAP_SHARE or kl >= MIN_KL
    warning = None if moved else (
        f"the policy changed almost nothing: {summary}, KL {kl:.4f}; raise --lr (now "
        f"{learning_rate:g}) or --epochs (now {epochs}), or --eta to ask for a larger gap")
    too_far = []
    if share > MAX_GAP_SHARE:
        too_far.append(f"{summary}, more than {MAX_GAP_SHARE:g}× its target")
    too_far.extend(_kl_too_far(values["train_kl"], held_kl))
    if too_far:
        warning = (f"the policy moved too far: {'; '.join(too_far)}; lower --lr (now "
                   f"{learning_rate:g}) or --epochs (now {epochs})")
    return Diagnosis("rebel", moved, summary, values, warning, overshot=bool(too_far))


def ppo_diagnosis(metrics: Sequence[dict], *, learning_rate: float, steps: int) -> Diagnosis:
    """``metrics``: PPO's logged rows (``objective/reward``, ``objective/kl``): KL to the start
    at the last step, reward gain from the first to the last quarter of the steps."""
    rewards = _series(metrics, "objective/reward")
    kls = _series(metrics, "objective/kl")
    if not rewards or not kls:
        raise ValueError("PPO metrics need objective/reward and objective/kl")
    gain = _quarter_mean(rewards, last=True) - _quarter_mean(rewards, last=False)
    kl = kls[-1]
    values = {"reward_gain": gain, "kl": kl, "reward_first": rewards[0],
              "reward_last": rewards[-1]}
    summary = f"PPO moved the reward by {gain:+.4f} at KL {kl:.4f} to the start"
    moved = kl >= MIN_KL or abs(gain) >= MIN_REWARD_GAIN
    warning = None if moved else (
        f"the policy changed almost nothing: {summary}; raise --lr (now {learning_rate:g}) "
        f"or --ppo-steps (now {steps}), or lower --kl-coef")
    overshot = kl > MAX_KL
    if overshot:
        warning = (f"the policy moved too far: KL {kl:.3f} to the starting policy, above "
                   f"{MAX_KL:g}; lower --lr (now {learning_rate:g}) or --ppo-steps (now "
                   f"{steps}), or raise --kl-coef")
    return Diagnosis("ppo", moved, summary, values, warning, overshot=overshot)


def dpo_diagnosis(margins: Sequence[float], kls: Sequence[float], *,
                  learning_rate: float, held_out_kls: Sequence[float] = ()) -> Diagnosis:
    """DPO: the implicit reward margin β·(log-ratio chosen − log-ratio rejected) per logged
    step, and KL to the reference (training pairs' ``kls``, and ``held_out_kls`` where there
    are held-out pairs); moved when the margin grew or the KL is not negligible."""
    if not margins:
        raise ValueError("DPO diagnosis needs the logged margins")
    gain = _quarter_mean(margins, last=True) - _quarter_mean(margins, last=False)
    kl = kls[-1] if kls else 0.0
    values = {"margin_first": margins[0], "margin_last": margins[-1], "margin_gain": gain,
              "kl": kl}
    if held_out_kls:
        values["held_out_kl"] = held_out_kls[-1]
    summary = f"DPO's reward margin went {margins[0]:.4f} → {margins[-1]:.4f} at KL {kl:.4f}"
    moved = kl >= MIN_KL or gain >= MIN_REWARD_GAIN
    warning = None if moved else (
        f"the policy changed almost nothing: {summary}; raise --lr (now {learning_rate:g}) "
        f"or --epochs")
    too_far = []
    if _quarter_mean(margins, last=True) > MAX_DPO_MARGIN:
        too_far.append(f"the reward margin ran to {margins[-1]:.3f}, past {MAX_DPO_MARGIN:g} "
                       "where σ(margin) > 0.99")
    too_far.extend(_kl_too_far(kl, held_out_kls))
    if too_far:
        warning = (f"the policy moved too far: {'; '.join(too_far)}; lower --lr (now "
                   f"{learning_rate:g}) or --epochs, or raise --beta")
    return Diagnosis("dpo", moved, summary, values, warning, overshot=bool(too_far))


def held_out_diagnosis(kl: float | None, *, learning_rate: float) -> Diagnosis | None:
    """KL(new ‖ old) per response on held-out prompts (the loop's report); None without one."""
    if kl is None:
        return None
    moved = kl >= MIN_KL
    summary = f"held-out KL(new ‖ old) {kl:.4f} per response"
    warning = None if moved else (
        f"the new policy samples almost what the old one did ({summary}); raise --lr "
        f"(now {learning_rate:g}) or the number of updates")
    overshot = kl > MAX_KL
    if overshot:
        warning = (f"the new policy moved far from the old one ({summary}, above {MAX_KL:g}): "
                   f"check its answers; lower --lr (now {learning_rate:g}) or the number of "
                   "updates")
    return Diagnosis("held-out", moved, summary, {"kl": kl}, warning, overshot=overshot)
