"""`rankloop train reward`, `rankloop score` and `rankloop eval reward`."""

from __future__ import annotations

import argparse
from pathlib import Path

from data import store
from launch.common import (UserError, add_db, add_progress, add_subcommand_db, add_train_command,
                           db_path, existing_db_path, group_with_db, positive_int)
from launch.config_args import ConfigSpec

REWARD = ConfigSpec("reward.train_bt", "RewardTrainConfig", title="reward model",
                    exclude=("db",),
                    choices={"ties": "reward.train_bt:TIES",
                             "objective": "data.scored_pairs:OBJECTIVES",
                             "annotator_weights": "data.scored_pairs:ANNOTATOR_WEIGHTS"})


def register(commands) -> None:
    add_train_command(
        commands, "reward", REWARD, "train_reward_model",
        help="train a Bradley-Terry reward model",
        description="Train a scalar reward model (AutoModelForSequenceClassification, one label) "
                    "with the Bradley-Terry loss on the app's ranked pairs (--db) or a TRL-format "
                    "preference file (--data). Runs under `accelerate launch` too; rerunning "
                    "the same command resumes from the last checkpoint in --output.",
    )

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
    add_progress(score)
    score.set_defaults(handler=_score)

    evaluate = group_with_db(commands, "eval", "evaluate a trained model").add_parser(
        "reward", help="accuracy on preference pairs and agreement with human rankings",
        description="Print a reward model's accuracy on preference pairs (--data) and, when the "
                    "database holds human rankings, how often it agrees with each human "
                    "pairwise judgment.",
    )
    add_subcommand_db(evaluate)
    _add_scorer_options(evaluate)
    evaluate.add_argument("--data", default=None, metavar="SOURCE",
                          help="TRL-format preference pairs to measure accuracy on")
    evaluate.add_argument("--split", default="train", help="dataset split (default: train)")
    evaluate.add_argument("--limit", type=positive_int, default=None, help="use at most N pairs")
    evaluate.set_defaults(handler=_eval_reward)


def _add_scorer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scorer", required=True, metavar="KIND:DIR",
                        help="bt:DIR (a model from `rankloop train reward`) or armorm:DIR "
                             "(an ArmoRM checkpoint such as RLHFlow/ArmoRM-Llama3-8B-v0.1)")
    parser.add_argument("--batch-size", type=positive_int, default=8,
                        help="conversations per forward pass (default: 8)")
    parser.add_argument("--max-length", type=positive_int, default=4096,
                        help="longer conversations keep their last this many tokens "
                             "(default: 4096)")


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
