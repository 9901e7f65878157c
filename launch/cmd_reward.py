"""`rankloop train reward`, `rankloop score` and `rankloop eval reward`."""

from __future__ import annotations

import argparse
from pathlib import Path

from data import store
from launch.common import (UserError, add_db, db_path, existing_db_path, positive_int,
                           subcommand_group)
from launch.training_options import (
    add_optimizer_options,
    add_tracking_options,
    optimizer_settings,
    tracking_settings,
)


def register(commands) -> None:
    train = _group(commands, "train", "train a model on the collected preferences").add_parser(
        "reward", help="train a Bradley-Terry reward model",
        description="Train a scalar reward model (AutoModelForSequenceClassification, one label) "
                    "with the Bradley-Terry loss on the app's ranked pairs (--db) or a TRL-format "
                    "preference file (--data). Runs under `accelerate launch` too; rerunning "
                    "the same command resumes from the last checkpoint in --output.",
    )
    _add_db(train)
    source = train.add_argument_group("data")
    source.add_argument("--data", default=None, metavar="SOURCE",
                        help="TRL-format preferences: .jsonl/.json/.parquet/.csv file, "
                             "save_to_disk folder or Hub id (default: the app's ranked pairs "
                             "in --db)")
    source.add_argument("--split", default="train", help="dataset split (default: train)")
    source.add_argument("--eval-data", default=None, metavar="SOURCE",
                        help="held-out pairs (default: hold out --eval-fraction of the prompts)")
    source.add_argument("--eval-fraction", type=float, default=0.1,
                        help="share of prompts held out (default: 0.1)")
    source.add_argument("--agreed-only", action="store_true",
                        help="database pairs only: keep pairs that at least two annotators judged, "
                             "all the same way")
    source.add_argument("--limit", type=positive_int, default=None, help="read at most N pairs")
    source.add_argument("--ties", choices=("exclude", "include"), default="exclude",
                        help="exclude tied pairs (default) or train them toward equal rewards")
    source.add_argument("--max-length", type=positive_int, default=1024,
                        help="drop pairs with a side longer than this many tokens (default: 1024)")
    model = train.add_argument_group("model")
    model.add_argument("--model", default="default",
                       help="'default' (embedded SmolLM2-135M-Instruct), a local Hugging Face "
                            "folder, or a Hub id")
    model.add_argument("--output", required=True, metavar="DIR",
                       help="folder for the trained model, metrics.jsonl and checkpoints")
    model.add_argument("--lora-r", type=int, default=0,
                       help="LoRA rank; 0 (default) trains every weight")
    model.add_argument("--lora-alpha", type=float, default=None, help="default: 2 x --lora-r")
    model.add_argument("--lora-dropout", type=float, default=0.0, help="default: 0")
    model.add_argument("--gradient-checkpointing", action="store_true",
                       help="recompute activations to save memory")
    model.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                       help="bf16 mixed precision (default: the accelerate config, else on a GPU)")
    optim = train.add_argument_group("optimization")
    optim.add_argument("--batch-size", type=positive_int, default=8,
                       help="pairs per micro-batch per process (default: 8)")
    optim.add_argument("--grad-accum", type=positive_int, default=1,
                       help="micro-batches per optimizer step (default: 1)")
    optim.add_argument("--epochs", type=positive_int, default=1, help="default: 1")
    optim.add_argument("--max-steps", type=positive_int, default=None,
                       help="optimizer steps (overrides --epochs)")
    optim.add_argument("--learning-rate", "--lr", type=float, default=1e-5, help="default: 1e-5")
    optim.add_argument("--lr-schedule", choices=("cosine", "linear", "constant"),
                       default="cosine", help="after warm-up (default: cosine)")
    optim.add_argument("--warmup-ratio", type=float, default=0.03, help="default: 0.03")
    add_optimizer_options(optim)
    optim.add_argument("--center-rewards", type=float, default=0.0, metavar="COEF",
                       help="reward-centering coefficient, e.g. 0.01 (default: 0, off)")
    optim.add_argument("--seed", type=int, default=0, help="default: 0")
    run = train.add_argument_group("logging and checkpoints")
    run.add_argument("--log-every", type=positive_int, default=10, help="steps (default: 10)")
    run.add_argument("--eval-every", type=positive_int, default=None,
                     help="steps (default: once per epoch)")
    run.add_argument("--save-every", type=positive_int, default=200,
                     help="steps between checkpoints (default: 200)")
    run.add_argument("--keep-checkpoints", type=positive_int, default=1,
                     help="newest complete checkpoints to keep (default: 1)")
    run.add_argument("--no-resume", action="store_true",
                     help="start over even if --output holds a checkpoint")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_tracking_options(run)
    train.set_defaults(handler=_train_reward)

    score = commands.add_parser(
        "score", help="score candidates with a reward model into the database",
        description="Score every candidate (of one run with --run) with a Bradley-Terry "
                    "(bt:DIR) or ArmoRM (armorm:DIR) reward model and store the scores in the "
                    "model_scores table, next to the human rankings. Candidates this scorer "
                    "already scored are skipped unless --rescore. Under `accelerate launch` "
                    "each process (one per GPU) scores a share of the candidates, split by "
                    "length; the main process writes all scores in one transaction, so a "
                    "killed run stores nothing and a rerun scores what is missing.",
    )
    add_db(score)
    _add_scorer_options(score)
    score.add_argument("--run", type=positive_int, default=None, metavar="ID",
                       help="only candidates of this generation run")
    score.add_argument("--rescore", action="store_true",
                       help="score already scored candidates again")
    score.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    score.set_defaults(handler=_score)

    evaluate = _group(commands, "eval", "evaluate a trained model").add_parser(
        "reward", help="accuracy on preference pairs and agreement with human rankings",
        description="Print a reward model's accuracy on preference pairs (--data) and, when the "
                    "database holds human rankings, how often it agrees with each human "
                    "pairwise judgment.",
    )
    _add_db(evaluate)
    _add_scorer_options(evaluate)
    evaluate.add_argument("--data", default=None, metavar="SOURCE",
                          help="TRL-format preference pairs to measure accuracy on")
    evaluate.add_argument("--split", default="train", help="dataset split (default: train)")
    evaluate.add_argument("--limit", type=positive_int, default=None, help="use at most N pairs")
    evaluate.set_defaults(handler=_eval_reward)


def _group(commands, name: str, help: str):
    group = subcommand_group(commands, name, help)
    parent = commands.choices[name]
    if not any(a.dest == "db" for a in parent._actions):
        add_db(parent)  # `rankloop train --db X reward` works as well as `... reward --db X`
    return group


def _add_db(parser: argparse.ArgumentParser) -> None:
    add_db(parser)
    # A subcommand's own default would overwrite a --db given before it, on the group.
    for action in parser._actions:
        if action.dest == "db":
            action.default = argparse.SUPPRESS


def _add_scorer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scorer", required=True, metavar="KIND:DIR",
                        help="bt:DIR (a model from `rankloop train reward`) or armorm:DIR "
                             "(an ArmoRM checkpoint such as RLHFlow/ArmoRM-Llama3-8B-v0.1)")
    parser.add_argument("--batch-size", type=positive_int, default=8,
                        help="conversations per forward pass (default: 8)")
    parser.add_argument("--max-length", type=positive_int, default=4096,
                        help="longer conversations keep their last this many tokens "
                             "(default: 4096)")


def _train_reward(args: argparse.Namespace) -> int:
    from reward.train_bt import RewardTrainConfig, train_reward_model

    db = None if args.data else existing_db_path(args)
    config = RewardTrainConfig(
        output=args.output, model=args.model, data=args.data, db=db, split=args.split,
        eval_data=args.eval_data, agreed_only=args.agreed_only, limit=args.limit,
        ties=args.ties, max_length=args.max_length, eval_fraction=args.eval_fraction,
        per_device_batch_size=args.batch_size, gradient_accumulation_steps=args.grad_accum,
        epochs=args.epochs, max_steps=args.max_steps, learning_rate=args.learning_rate,
        warmup_ratio=args.warmup_ratio, lr_schedule=args.lr_schedule,
        center_rewards_coefficient=args.center_rewards, lora_r=args.lora_r,
        lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        gradient_checkpointing=args.gradient_checkpointing, bf16=args.bf16, seed=args.seed,
        log_every=args.log_every, eval_every=args.eval_every, save_every=args.save_every,
        keep_checkpoints=args.keep_checkpoints, resume=not args.no_resume,
        **optimizer_settings(args), **tracking_settings(args),
    )
    summary = train_reward_model(config, progress=not args.no_progress)
    if summary.main_process:
        print(summary.line())
    return 0


def _score(args: argparse.Namespace) -> int:
    from reward.score import ScoreConfig, parse_scorer, score_candidates

    spec = parse_scorer(args.scorer)
    db = store.open_store(existing_db_path(args))
    if args.run is not None and db["generation_runs"].count_where("id = ?", [args.run]) == 0:
        raise UserError(f"generation run {args.run} does not exist in {db_path(args)}")
    db.close()
    summary = score_candidates(ScoreConfig(
        db=db_path(args), scorer=args.scorer, run_id=args.run, rescore=args.rescore,
        batch_size=args.batch_size, max_length=args.max_length), progress=not args.no_progress)
    if not summary.main_process:
        return 0
    if not summary.candidates:
        print(f"nothing to score: every candidate already has a score from {spec.name} "
              "(--rescore scores them again)")
        return 0
    from data.queue_order import refresh_uncertainty

    db = store.open_store(db_path(args))
    refresh_uncertainty(db)  # the uncertain queue order reads the new scores
    db.close()
    print(f"scored {summary.candidates} candidates with {spec.name} in {summary.seconds:.1f} s "
          f"on {summary.processes} process{'es' if summary.processes > 1 else ''} "
          f"({summary.per_second:.1f}/s; {summary.truncated} cut to their last "
          f"{args.max_length} tokens); stored in model_scores of {db_path(args)}")
    return 0


def _eval_reward(args: argparse.Namespace) -> int:
    from data.preferences import load_preference_file
    from reward.evaluate import human_agreement, pair_accuracy
    from reward.score import load_scorer, parse_scorer

    spec = parse_scorer(args.scorer)
    path = db_path(args)
    has_db = Path(path).is_file()
    if not args.data and not has_db:
        raise UserError(f"nothing to evaluate: pass --data with preference pairs, or --db with "
                        f"human rankings ({path} does not exist)")
    pairs = None
    if args.data:
        pairs = load_preference_file(args.data, split=args.split, limit=args.limit)
    scorer = load_scorer(spec, max_length=args.max_length)
    if pairs is not None:
        result = pair_accuracy(scorer, pairs.pairs, batch_size=args.batch_size)
        print(f"accuracy {result.accuracy:.4f} on {result.pairs} pairs from {pairs.source} "
              f"(mean margin {result.mean_margin:.4f}; {result.ties_skipped} ties skipped; "
              f"dropped: {pairs.describe_drops()})")
    if has_db:
        agreement = human_agreement(store.open_store(path), scorer, batch_size=args.batch_size)
        if agreement is None:
            if pairs is None:
                raise UserError(f"{path} has no human rankings with a preference yet; "
                                "pass --data to measure accuracy on preference pairs")
            print(f"no human rankings in {path} to compare with")
        else:
            print(f"agreement with humans {agreement.agreement:.4f} on {agreement.comparisons} "
                  f"pairwise judgments in {path} ({agreement.candidates_scored} candidates "
                  f"scored now, {agreement.stored_scores_used} stored scores reused)")
    if scorer.truncated:
        print(f"{scorer.truncated} conversations were cut to their last {args.max_length} tokens")
    return 0
