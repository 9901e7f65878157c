"""`rankloop simulate`: simulated annotators rank the open items of the app's queue; and the
``--queue-order`` options that `rankloop app` shares."""

from __future__ import annotations

import argparse

from data import store
from launch.common import UserError, add_db, db_path, positive_int


def register(commands) -> None:
    sim = commands.add_parser(
        "simulate", help="rank the queue's open items with simulated annotators",
        description="Simulated annotators rank the open items of the app's queue through the "
                    "same submission path people use: each scores every candidate with "
                    "FUNCTION(prompts, responses) -> floats (MODULE imported from the working "
                    "directory) and ranks by score / noise + Gumbel noise, so a pair's order "
                    "follows Bradley-Terry: P(a above b) = sigmoid((s_a - s_b) / noise). "
                    "Several annotators with --overlap > 1 give agreement statistics. Test a "
                    "pipeline before paying for people.")
    add_db(sim)
    sim.add_argument("function", metavar="MODULE:FUNCTION",
                     help="the scoring function (simulated:MODULE:FUNCTION also accepted)")
    sim.add_argument("--annotators", type=positive_int, default=3,
                     help="simulated annotators sim-1 .. sim-N (default: 3)")
    sim.add_argument("--overlap", type=positive_int, default=2,
                     help="distinct annotators per item (default: 2)")
    sim.add_argument("--noise", type=float, default=1.0,
                     help="Gumbel noise temperature (default: 1.0; 0 ranks by the score)")
    sim.add_argument("--limit", type=positive_int, default=None,
                     help="stop after N rankings (default: rank until the queue is empty)")
    sim.add_argument("--seed", type=int, default=0, help="default: 0")
    add_queue_order_args(sim)
    sim.set_defaults(handler=_simulate)


def add_queue_order_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("queue order (stored in the database: the project's "
                                      "setting until changed)")
    group.add_argument("--queue-order", choices=("fifo", "random", "uncertain"), default=None,
                       help="serve items oldest first, in a fixed random order, or those the "
                            "reward model is least sure about first (default: keep the "
                            "project's setting; fifo for a new project)")
    group.add_argument("--queue-scorer", action="append", default=None, metavar="KIND:DIR",
                       help="uncertain order: the reward model whose stored scores (rankloop "
                            "score) measure uncertainty; repeat for an ensemble")
    group.add_argument("--queue-seed", type=int, default=0,
                       help="random order: which permutation (default: 0)")


def apply_queue_order(args: argparse.Namespace, db, *, say=print) -> None:
    """Stores ``--queue-order`` as the project's setting when given; refreshes uncertainties."""
    from data.queue_order import QueueOrder, refresh_uncertainty, set_queue_order

    if args.queue_order is None:
        if args.queue_scorer:
            raise UserError("--queue-scorer goes with --queue-order uncertain")
        refresh_uncertainty(db)
        return
    scorers: tuple[str, ...] = ()
    if args.queue_scorer:
        from reward.score import parse_scorer

        scorers = tuple(parse_scorer(s).name for s in args.queue_scorer)
    order = QueueOrder(args.queue_order, scorers, args.queue_seed)
    scored = set_queue_order(db, order)
    say(f"queue order: {order.order}" + (f" by {', '.join(scorers)} ({scored} items scored)"
                                         if order.order == "uncertain" else ""))


def _simulate(args: argparse.Namespace) -> int:
    from data.simulate import SimulationConfig, load_score_fn, simulate_queue

    score_fn = load_score_fn(args.function)
    config = SimulationConfig(annotators=args.annotators, overlap=args.overlap,
                              noise=args.noise, limit=args.limit, seed=args.seed)
    db = store.open_store(db_path(args))
    apply_queue_order(args, db)
    summary = simulate_queue(db, score_fn, config)
    print(summary.line())
    return 0
