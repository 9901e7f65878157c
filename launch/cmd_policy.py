"""`rankloop train rebel`, `rankloop train dpo`, `rankloop train ppo` and `rankloop loop`."""

from __future__ import annotations

import argparse

from launch.common import add_db, db_path, existing_db_path, positive_int, subcommand_group
from launch.training_options import (
    add_optimizer_options,
    add_tracking_options,
    optimizer_settings,
    tracking_settings,
)


def register(commands) -> None:
    from policy.loop import TRAINERS

    train = _group(commands)
    rebel = train.add_parser(
        "rebel", help="train a policy with REBEL on preference pairs",
        description="Train a policy with REBEL: regress the policy's log-ratio gap between the "
                    "chosen and rejected responses onto their reward gap. Pairs come from a "
                    "TRL-format file (--data; optional score_chosen/score_rejected columns) or "
                    "the app's database (--db): a reward model's stored scores (--scorer) or "
                    "the human rankings. Runs under `accelerate launch` too; rerunning the same "
                    "command resumes from the last checkpoint in --output.",
    )
    _add_pair_source(rebel)
    _add_model_options(rebel, default_lr=3e-7)
    algo = rebel.add_argument_group("REBEL")
    algo.add_argument("--eta", type=float, default=1.0,
                      help="target log-ratio gap per unit of reward gap (default: 1.0)")
    algo.add_argument("--temperature", type=float, default=1.0,
                      help="temperature the responses were sampled at (default: 1.0)")
    rebel.set_defaults(handler=_train_rebel)

    dpo = train.add_parser(
        "dpo", help="train a policy with DPO or IPO on preference pairs",
        description="Train a policy with DPO (--loss sigmoid) or IPO (--loss ipo): raise the "
                    "chosen response's log-ratio to the reference model above the rejected "
                    "one's, with beta setting how far from the reference. Pairs are built as "
                    "for `train rebel`: a TRL-format file (--data) or the app's database "
                    "(--db), ordered by a reward model's stored scores (--scorer) or the human "
                    "rankings. The reference is --model; its log-probs are computed once. Runs "
                    "under `accelerate launch` too; rerunning the same command resumes from "
                    "the last checkpoint in --output.",
    )
    _add_pair_source(dpo)
    _add_model_options(dpo, default_lr=1e-6)
    algo = dpo.add_argument_group("DPO")
    algo.add_argument("--loss", choices=("sigmoid", "ipo"), default="sigmoid",
                      help="sigmoid (DPO) or ipo (default: sigmoid)")
    algo.add_argument("--beta", type=float, default=0.1,
                      help="strength of the pull toward the reference model (default: 0.1)")
    dpo.set_defaults(handler=_train_dpo)

    ppo = train.add_parser(
        "ppo", help="train a policy with PPO against a reward model",
        description="Train a policy with PPO: sample responses to prompts with the current "
                    "policy, score them with a reward model (--scorer) or a Python reward "
                    "function (--reward-fn), and update policy and value head with clipped "
                    "objectives, GAE and a per-token KL penalty to the starting model. Runs "
                    "under `accelerate launch` too (each process rolls out its share of every "
                    "batch); rerunning the same command resumes from the last checkpoint.",
    )
    add_db(ppo)
    reward = ppo.add_mutually_exclusive_group(required=True)
    reward.add_argument("--scorer", metavar="KIND:DIR", help="reward model: bt:DIR or armorm:DIR")
    reward.add_argument("--reward-fn", metavar="MODULE:FUNCTION",
                        help="a Python reward, called as FUNCTION(prompts, responses) -> list of "
                             "floats; MODULE is imported from the working directory")
    ppo.add_argument("--prompts", default=None, metavar="SOURCE",
                     help="prompt source (default: the bundled prompts)")
    ppo.add_argument("--limit", type=positive_int, default=None, help="use at most N prompts")
    ppo.add_argument("--model", default="default", help="starting policy (default: SmolLM2)")
    ppo.add_argument("--output", required=True, metavar="DIR", help="folder for the policy")
    ppo.add_argument("--backend", choices=("transformers", "vllm"), default="transformers",
                     help="rollout sampler; vllm gets the new weights after every update "
                          "(default: transformers)")
    ppo.add_argument("--steps", type=positive_int, default=100,
                     help="rollout/update iterations (default: 100)")
    ppo.add_argument("--rollout-batch", type=positive_int, default=16,
                     help="prompts per rollout over all processes (default: 16)")
    ppo.add_argument("--minibatch", type=positive_int, default=4,
                     help="responses per gradient step over all processes (default: 4)")
    ppo.add_argument("--ppo-epochs", type=positive_int, default=4, help="default: 4")
    ppo.add_argument("--max-new-tokens", type=positive_int, default=64, help="default: 64")
    ppo.add_argument("--temperature", type=float, default=0.7, help="default: 0.7")
    ppo.add_argument("--kl-coef", type=float, default=0.05, help="default: 0.05")
    ppo.add_argument("--target-kl", type=float, default=None,
                     help="adapt the KL coefficient toward this KL per sequence (default: fixed)")
    ppo.add_argument("--missing-eos-penalty", type=float, default=None,
                     help="subtract this from the reward of responses cut by --max-new-tokens")
    ppo.add_argument("--learning-rate", "--lr", type=float, default=1e-6, help="default: 1e-6")
    add_optimizer_options(ppo, adam_eps=1e-5)
    ppo.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                     help="bf16 mixed precision (default: on with a GPU)")
    ppo.add_argument("--seed", type=int, default=0, help="default: 0")
    ppo.add_argument("--log-every", type=positive_int, default=1, help="steps (default: 1)")
    ppo.add_argument("--save-every", type=positive_int, default=50,
                     help="checkpoint every N steps (default: 50)")
    ppo.add_argument("--no-resume", action="store_true",
                     help="start over even if --output has a checkpoint")
    ppo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_tracking_options(ppo)
    ppo.set_defaults(handler=_train_ppo)

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
    loop.add_argument("--learning-rate", "--lr", type=float, default=None,
                      help="default: the algorithm's own, as `rankloop train ALGORITHM` has it "
                           "(REBEL 3e-7, DPO 1e-6, PPO 1e-6)")
    loop.add_argument("--eta", type=float, default=1.0, help="REBEL eta (default: 1.0)")
    loop.add_argument("--beta", type=float, default=0.1, help="DPO beta (default: 0.1)")
    loop.add_argument("--dpo-loss", choices=("sigmoid", "ipo"), default="sigmoid",
                      help="DPO loss (default: sigmoid)")
    loop.add_argument("--epochs", type=positive_int, default=1, help="REBEL and DPO: passes over the pairs (default: 1)")
    loop.add_argument("--batch-size", type=positive_int, default=4,
                      help="REBEL and DPO: pairs per micro-batch (default: 4)")
    loop.add_argument("--ppo-steps", type=positive_int, default=20, help="PPO (default: 20)")
    loop.add_argument("--rollout-batch", type=positive_int, default=16,
                      help="PPO prompts per rollout (default: 16)")
    loop.add_argument("--minibatch", type=positive_int, default=4,
                      help="PPO responses per gradient step (default: 4)")
    loop.add_argument("--ppo-epochs", type=positive_int, default=4, help="PPO (default: 4)")
    loop.add_argument("--kl-coef", type=float, default=0.05, help="PPO (default: 0.05)")
    loop.add_argument("--seed", type=int, default=0, help="default: 0")
    loop.set_defaults(handler=_loop)


def _group(commands):
    group = subcommand_group(commands, "train", "train a model on the collected preferences")
    parent = commands.choices["train"]
    if not any(a.dest == "db" for a in parent._actions):
        add_db(parent)
    return group


def _add_db(parser: argparse.ArgumentParser) -> None:
    add_db(parser)
    for action in parser._actions:  # a --db given on `rankloop train` must survive
        if action.dest == "db":
            action.default = argparse.SUPPRESS


def _add_pair_source(parser) -> None:
    _add_db(parser)
    source = parser.add_argument_group("data")
    source.add_argument("--data", default=None, metavar="SOURCE",
                        help="TRL-format preferences: .jsonl/.json/.parquet/.csv file, save_to_disk "
                             "folder or Hub id; or the app's database file (default: --db)")
    source.add_argument("--split", default="train", help="dataset split (default: train)")
    source.add_argument("--scorer", default=None, metavar="KIND:DIR",
                        help="database only: rewards from this reward model's stored scores "
                             "(default: human rankings, mapped best=1 .. worst=0)")
    source.add_argument("--run", type=positive_int, default=None, metavar="ID",
                        help="database only: candidates of this generation run")
    source.add_argument("--pairs", choices=("best_worst", "all"), default="best_worst",
                        help="per prompt: best vs worst (default) or every pair")
    source.add_argument("--limit", type=positive_int, default=None, help="read at most N pairs")
    source.add_argument("--max-prompt-tokens", type=positive_int, default=1024,
                        help="drop pairs with a longer prompt (default: 1024)")
    source.add_argument("--max-response-tokens", type=positive_int, default=2048,
                        help="drop pairs with a longer response (default: 2048)")
    source.add_argument("--eval-fraction", type=float, default=0.1,
                        help="share of prompts held out (default: 0.1)")


def _add_model_options(parser, *, default_lr: float) -> None:
    model = parser.add_argument_group("model")
    model.add_argument("--model", default="default",
                       help="the policy that sampled the pairs, and the starting weights: "
                            "'default' (SmolLM2-135M-Instruct), a folder or a Hub id")
    model.add_argument("--output", required=True, metavar="DIR",
                       help="folder for the trained policy, metrics.jsonl and checkpoints")
    model.add_argument("--lora-r", type=int, default=0, help="LoRA rank; 0 (default) trains all")
    model.add_argument("--lora-alpha", type=float, default=None, help="default: 2 x --lora-r")
    model.add_argument("--gradient-checkpointing", action="store_true",
                       help="recompute activations to save memory")
    model.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                       help="bf16 mixed precision (default: the accelerate config, else on a GPU)")
    optim = parser.add_argument_group("optimization")
    optim.add_argument("--batch-size", type=positive_int, default=4,
                       help="pairs per micro-batch per process (default: 4)")
    optim.add_argument("--grad-accum", type=positive_int, default=1,
                       help="micro-batches per optimizer step (default: 1)")
    optim.add_argument("--epochs", type=positive_int, default=1, help="default: 1")
    optim.add_argument("--max-steps", type=positive_int, default=None,
                       help="optimizer steps (overrides --epochs)")
    optim.add_argument("--learning-rate", "--lr", type=float, default=default_lr,
                       help=f"default: {default_lr:g}")
    optim.add_argument("--lr-schedule", choices=("cosine", "linear", "constant"),
                       default="cosine", help="after warm-up (default: cosine)")
    optim.add_argument("--warmup-ratio", type=float, default=0.1, help="default: 0.1")
    add_optimizer_options(optim)
    optim.add_argument("--seed", type=int, default=0, help="default: 0")
    run = parser.add_argument_group("logging and checkpoints")
    run.add_argument("--log-every", type=positive_int, default=10, help="steps (default: 10)")
    run.add_argument("--eval-every", type=positive_int, default=None,
                     help="steps (default: once per epoch)")
    run.add_argument("--save-every", type=positive_int, default=200,
                     help="steps between checkpoints (default: 200)")
    run.add_argument("--no-resume", action="store_true",
                     help="start over even if --output holds a checkpoint")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_tracking_options(run)


def _pair_training_settings(args: argparse.Namespace) -> dict:
    """The options REBEL and DPO share: pairs, batching, schedule, LoRA, logging, resume."""
    return dict(
        output=args.output, model=args.model, data=args.data,
        db=None if args.data else existing_db_path(args), scorer=args.scorer,
        run_id=args.run, pair_mode=args.pairs, split=args.split, limit=args.limit,
        max_prompt_tokens=args.max_prompt_tokens, max_response_tokens=args.max_response_tokens,
        eval_fraction=args.eval_fraction,
        per_device_batch_size=args.batch_size, gradient_accumulation_steps=args.grad_accum,
        epochs=args.epochs, max_steps=args.max_steps, learning_rate=args.learning_rate,
        warmup_ratio=args.warmup_ratio, lr_schedule=args.lr_schedule, lora_r=args.lora_r,
        lora_alpha=args.lora_alpha, gradient_checkpointing=args.gradient_checkpointing,
        bf16=args.bf16, seed=args.seed, log_every=args.log_every, eval_every=args.eval_every,
        save_every=args.save_every, resume=not args.no_resume, **optimizer_settings(args),
        **tracking_settings(args),
    )


def _train_rebel(args: argparse.Namespace) -> int:
    from policy.rebel import RebelConfig, train_rebel

    config = RebelConfig(**_pair_training_settings(args), eta=args.eta,
                         temperature=args.temperature)
    summary = train_rebel(config, progress=not args.no_progress)
    if summary.main_process:
        print(summary.line())
    return 0


def _train_dpo(args: argparse.Namespace) -> int:
    from policy.dpo import DPOConfig, train_dpo

    config = DPOConfig(**_pair_training_settings(args), loss_type=args.loss, beta=args.beta)
    summary = train_dpo(config, progress=not args.no_progress)
    if summary.main_process:
        print(summary.line())
    return 0


def _train_ppo(args: argparse.Namespace) -> int:
    from policy.ppo import PPOConfig, function_reward, scorer_reward, train_ppo

    config = PPOConfig(
        output=args.output, model=args.model, prompts=args.prompts, limit=args.limit,
        backend=args.backend, total_steps=args.steps, rollout_batch_size=args.rollout_batch,
        minibatch_size=args.minibatch, ppo_epochs=args.ppo_epochs,
        max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        kl_coef=args.kl_coef, target_kl=args.target_kl,
        missing_eos_penalty=args.missing_eos_penalty, learning_rate=args.learning_rate,
        bf16=args.bf16, seed=args.seed, log_every=args.log_every, save_every=args.save_every,
        resume=not args.no_resume, **optimizer_settings(args), **tracking_settings(args),
    )
    reward = scorer_reward(args.scorer) if args.scorer else function_reward(args.reward_fn)
    summary = train_ppo(config, reward_fn=reward, progress=not args.no_progress)
    if summary.main_process:
        print(summary.line())
    return 0


def _loop(args: argparse.Namespace) -> int:
    from policy.loop import LoopConfig, run_loop

    config = LoopConfig(
        db=db_path(args), scorer=args.scorer, output=args.output, algorithm=args.algorithm,
        feedback=args.feedback, min_ranked=args.min_ranked, wait_minutes=args.wait_minutes,
        model=args.model, prompts=args.prompts, limit=args.limit, k=args.k,
        backend=args.backend, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        eval_fraction=args.eval_fraction, eta=args.eta, beta=args.beta, dpo_loss=args.dpo_loss,
        learning_rate=args.learning_rate,
        epochs=args.epochs, per_device_batch_size=args.batch_size, ppo_steps=args.ppo_steps,
        rollout_batch_size=args.rollout_batch, minibatch_size=args.minibatch,
        kl_coef=args.kl_coef, seed=args.seed, tensor_parallel_size=args.tensor_parallel_size,
        data_parallel_size=args.data_parallel_size, ppo_epochs=args.ppo_epochs,
        iterations=args.iterations, sim_annotators=args.sim_annotators,
        sim_overlap=args.sim_overlap, sim_noise=args.sim_noise,
    )
    run_loop(config)
    return 0
