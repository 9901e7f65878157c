"""`rankloop train rebel`, `rankloop train dpo`, `rankloop train ppo` and `rankloop loop`."""

from __future__ import annotations

import argparse

from launch.common import add_db, add_train_command, db_path, positive_int
from launch.config_args import ConfigSpec

_PAIR_CHOICES = {"pair_mode": "data.scored_pairs:MODES",
                 "objective": "data.scored_pairs:OBJECTIVES",
                 "annotator_weights": "data.scored_pairs:ANNOTATOR_WEIGHTS"}
REBEL = ConfigSpec("policy.rebel", "RebelConfig", title="REBEL", exclude=("db",),
                   choices=_PAIR_CHOICES)
DPO = ConfigSpec("policy.dpo", "DPOConfig", title="DPO", exclude=("db",),
                 choices={**_PAIR_CHOICES, "loss_type": "policy.losses:DPO_LOSSES"})
PPO = ConfigSpec("policy.ppo", "PPOConfig", title="PPO",
                 choices={"backend": ("transformers", "vllm")})


def register(commands) -> None:
    from policy.loop import TRAINERS

    add_train_command(
        commands, "rebel", REBEL, "train_rebel",
        help="train a policy with REBEL on preference pairs",
        description="Train a policy with REBEL: regress the policy's log-ratio gap between the "
                    "chosen and rejected responses onto their reward gap. Pairs come from a "
                    "TRL-format file (--data; optional score_chosen/score_rejected columns) or "
                    "the app's database (--db): a reward model's stored scores (--scorer) or "
                    "the human rankings. Runs under `accelerate launch` too; rerunning the same "
                    "command resumes from the last checkpoint in --output.",
    )

    add_train_command(
        commands, "dpo", DPO, "train_dpo",
        help="train a policy with DPO or IPO on preference pairs",
        description="Train a policy with DPO (--loss sigmoid) or IPO (--loss ipo): raise the "
                    "chosen response's log-ratio to the reference model above the rejected "
                    "one's, with beta setting how far from the reference. Pairs are built as "
                    "for `train rebel`: a TRL-format file (--data) or the app's database "
                    "(--db), ordered by a reward model's stored scores (--scorer) or the human "
                    "rankings. The reference is --model; its log-probs are computed once. Runs "
                    "under `accelerate launch` too; rerunning the same command resumes from "
                    "the last checkpoint in --output.",
    )

    ppo = add_train_command(
        commands, "ppo", PPO, "train_ppo", extra=_ppo_reward,
        help="train a policy with PPO against a reward model",
        description="Train a policy with PPO: sample responses to prompts with the current "
                    "policy, score them with a reward model (--scorer) or a Python reward "
                    "function (--reward-fn), and update policy and value head with clipped "
                    "objectives, GAE and a per-token KL penalty to the starting model. Runs "
                    "under `accelerate launch` too (each process rolls out its share of every "
                    "batch); rerunning the same command resumes from the last checkpoint.",
    )
    reward = ppo.add_argument_group("reward").add_mutually_exclusive_group(required=True)
    reward.add_argument("--scorer", metavar="KIND:DIR", help="reward model: bt:DIR or armorm:DIR")
    reward.add_argument("--reward-fn", metavar="MODULE:FUNCTION",
                        help="a Python reward, called as FUNCTION(prompts, responses) -> list of "
                             "floats; MODULE is imported from the working directory")

    loop = commands.add_parser(
        "loop", help="run policy iterations: generate, get feedback, train, report, record",
        description="Policy iterations on the app's database: generate k candidates per "
                    "prompt with the current policy (the last recorded iteration's model, "
                    "else --model); get feedback: score them with the reward model, wait for "
                    "annotators to rank them in the app (--feedback human), or let simulated "
                    "annotators rank them through the app's queue (--feedback "
                    "simulated:MODULE:FUNCTION); train the new policy with REBEL or DPO on each "
                    "prompt's best/worst pair, or with PPO; save "
                    "the new policy under --output/iter-N and record it, so the next "
                    "generation uses it. Prints a report per iteration (held-out mean reward "
                    "of the new vs the previous policy, win rate, KL, length, whether training "
                    "moved the policy) and writes loop_report.md/.json/.svg in --output. "
                    "--iterations N chains N iterations; rerunning the same command after a "
                    "crash continues at the step it reached.",
    )
    add_db(loop)
    loop.add_argument("--scorer", default=None, metavar="KIND:DIR",
                      help="reward model: bt:DIR or armorm:DIR (optional only with "
                           "--feedback human)")
    loop.add_argument("--output", required=True, metavar="DIR",
                      help="folder holding one sub-folder per iteration")
    loop.add_argument("--algorithm", choices=tuple(TRAINERS), default="rebel",
                      help="default: rebel")
    loop.add_argument("--iterations", type=positive_int, default=1,
                      help="iterations to chain (default: 1)")
    loop.add_argument("--feedback", default="reward-model",
                      metavar="reward-model|human|simulated:MODULE:FUNCTION",
                      help="the reward model's scores, rankings made in the app, or rankings by "
                           "simulated annotators who score each candidate with "
                           "FUNCTION(prompts, responses) -> floats plus noise (default: "
                           "reward-model)")
    loop.add_argument("--sim-annotators", type=positive_int, default=3,
                      help="simulated feedback: annotators (default: 3)")
    loop.add_argument("--sim-overlap", type=positive_int, default=2,
                      help="simulated feedback: annotators per item (default: 2)")
    loop.add_argument("--sim-noise", type=float, default=1.0,
                      help="simulated feedback: Gumbel noise temperature; P(a above b) = "
                           "sigmoid((s_a - s_b) / noise) (default: 1.0; 0 = exact)")
    loop.add_argument("--min-ranked", type=positive_int, default=None,
                      help="human feedback: prompts that must be ranked before training "
                           "(default: all of the iteration's training prompts)")
    loop.add_argument("--wait-minutes", type=float, default=60.0,
                      help="human feedback: stop waiting after this long and train on what is "
                           "ranked (default: 60)")
    loop.add_argument("--model", default="default",
                      help="policy for the first iteration (default: SmolLM2)")
    loop.add_argument("--prompts", default=None, metavar="SOURCE",
                      help="prompt source (default: the bundled prompts)")
    loop.add_argument("--limit", type=positive_int, default=None, help="use at most N prompts")
    loop.add_argument("--k", type=positive_int, default=4, help="candidates per prompt (default: 4)")
    loop.add_argument("--backend", choices=("auto", "vllm", "transformers"), default="auto",
                      help="sampling backend (default: vLLM when installed)")
    loop.add_argument("--tensor-parallel-size", type=positive_int, default=1, metavar="N",
                      help="GPUs per vLLM engine, as for `rankloop generate` (default: 1)")
    loop.add_argument("--data-parallel-size", type=positive_int, default=1, metavar="N",
                      help="sampling engines, as for `rankloop generate` (default: 1)")
    loop.add_argument("--max-new-tokens", type=positive_int, default=256, help="default: 256")
    loop.add_argument("--temperature", type=float, default=0.8, help="default: 0.8")
    loop.add_argument("--eval-fraction", type=float, default=0.1,
                      help="share of prompts held out for the report (default: 0.1)")
    loop.add_argument("--seed", type=int, default=0, help="default: 0")
    loop.add_argument("--previous-share", type=float, default=None, metavar="X",
                      help="share of each prompt's k candidates sampled from the previous "
                           "policy, blind, so the rankings also judge new against previous "
                           "(human_win_rate in the report; never trained on; default: 0.5 with "
                           "human or simulated feedback, 0 with reward-model feedback; k >= 3)")
    loop.add_argument("--stop-when-not-preferred", action="store_true",
                      help="stop when the rankings show people no longer prefer the new policy "
                           "to the previous one (human_win_rate <= 0.5)")
    _add_loop_algorithm_options(loop)
    loop.set_defaults(handler=_loop)


def _add_loop_algorithm_options(loop) -> None:
    """Each algorithm's own settings (``policy.loop.ALGORITHM_SETTINGS``); unset ones keep the
    --recipe's value, and a setting of another algorithm is refused."""
    from policy.loop import RECIPES

    group = loop.add_argument_group(
        "algorithm settings", "each algorithm has its own defaults (--recipe default: sized to "
        "the model, with a KL budget per iteration; reference-8b: the 8B reference values)")
    group.add_argument("--recipe", choices=tuple(RECIPES), default="default",
                       help="where the algorithm's settings come from (default: default)")
    group.add_argument("--learning-rate", "--lr", type=float, default=None,
                       help="default: from the model's size, per algorithm (SmolLM2-135M: "
                            "REBEL 2e-5, DPO 1e-5, PPO 1e-5; 8B: 3e-7, 1e-6, 1e-6)")
    group.add_argument("--kl-budget", type=float, default=None, metavar="NATS",
                       help="how far one iteration may move the policy, KL per response: "
                            "REBEL and DPO stop training there, PPO's KL coefficient adapts "
                            "toward it (default: 0.8)")
    group.add_argument("--no-kl-budget", action="store_true",
                       help="run every planned step (REBEL, DPO) or keep --kl-coef fixed (PPO)")
    group.add_argument("--eta", type=float, default=None, help="REBEL eta (default: 4.0)")
    group.add_argument("--beta", type=float, default=None, help="DPO beta (default: 0.1)")
    group.add_argument("--dpo-loss", choices=("sigmoid", "ipo"), default=None,
                       help="DPO loss (default: sigmoid)")
    group.add_argument("--epochs", type=positive_int, default=None,
                       help="REBEL and DPO: passes over the pairs at most (default: 2)")
    group.add_argument("--batch-size", type=positive_int, default=None,
                       help="REBEL and DPO: pairs per micro-batch (default: 4)")
    group.add_argument("--ppo-steps", type=positive_int, default=None, help="PPO (default: 6)")
    group.add_argument("--rollout-batch", type=positive_int, default=None,
                       help="PPO prompts per rollout (default: 16)")
    group.add_argument("--minibatch", type=positive_int, default=None,
                       help="PPO responses per gradient step (default: 8)")
    group.add_argument("--ppo-epochs", type=positive_int, default=None, help="PPO (default: 2)")
    group.add_argument("--kl-coef", type=float, default=None,
                       help="PPO: starting KL coefficient (default: 0.05)")


def loop_settings(args: argparse.Namespace):
    """The chosen algorithm's settings from the loop's options."""
    from data.errors import ConfigError
    from policy.loop import algorithm_settings

    given = {"learning_rate": args.learning_rate, "eta": args.eta, "beta": args.beta,
             "loss": args.dpo_loss, "per_device_batch_size": args.batch_size,
             "rollout_batch_size": args.rollout_batch, "minibatch_size": args.minibatch,
             "kl_coef": args.kl_coef}
    if args.algorithm == "ppo":
        given.update(steps=args.ppo_steps, epochs=args.ppo_epochs, target_kl=args.kl_budget)
        other = {"--epochs": args.epochs}
    else:
        given.update(epochs=args.epochs, kl_budget=args.kl_budget)
        other = {"--ppo-steps": args.ppo_steps, "--ppo-epochs": args.ppo_epochs}
    settings = algorithm_settings(args.algorithm, args.recipe, **{
        k: v for k, v in given.items() if v is not None and k in _fields(args.algorithm)})
    flags = {"loss": "--dpo-loss", "per_device_batch_size": "--batch-size",
             "rollout_batch_size": "--rollout-batch", "minibatch_size": "--minibatch"}
    stray = [flag for flag, v in other.items() if v is not None] + [
        flags.get(k, "--" + k.replace("_", "-")) for k, v in given.items()
        if v is not None and k not in _fields(args.algorithm)]
    if stray:
        raise ConfigError(f"{', '.join(sorted(stray))} not used by --algorithm {args.algorithm}")
    if args.no_kl_budget:
        if args.kl_budget is not None:
            raise ConfigError("--kl-budget and --no-kl-budget contradict each other")
        setattr(settings, "target_kl" if args.algorithm == "ppo" else "kl_budget", None)
    return settings


def _fields(algorithm: str) -> set[str]:
    from dataclasses import fields

    from policy.loop import ALGORITHM_SETTINGS

    return {f.name for f in fields(ALGORITHM_SETTINGS[algorithm])}


def _ppo_reward(args: argparse.Namespace) -> dict:
    from policy.ppo import function_reward, scorer_reward

    reward = scorer_reward(args.scorer) if args.scorer else function_reward(args.reward_fn)
    return {"reward_fn": reward}


def _loop(args: argparse.Namespace) -> int:
    from policy.loop import LoopConfig, run_loop

    config = LoopConfig(
        db=db_path(args), scorer=args.scorer, output=args.output, algorithm=args.algorithm,
        feedback=args.feedback, min_ranked=args.min_ranked, wait_minutes=args.wait_minutes,
        model=args.model, prompts=args.prompts, limit=args.limit, k=args.k,
        backend=args.backend, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        eval_fraction=args.eval_fraction, recipe=args.recipe, settings=loop_settings(args),
        seed=args.seed, tensor_parallel_size=args.tensor_parallel_size,
        data_parallel_size=args.data_parallel_size,
        iterations=args.iterations, sim_annotators=args.sim_annotators,
        sim_overlap=args.sim_overlap, sim_noise=args.sim_noise,
        previous_share=args.previous_share,
        stop_when_not_preferred=args.stop_when_not_preferred,
    )
    run_loop(config)
    return 0
