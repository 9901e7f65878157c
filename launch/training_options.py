"""Command-line options every training command shares: the optimizer's knobs and the trackers
metrics go to."""

from __future__ import annotations

import argparse

TRACKERS = ("tensorboard", "wandb")


def add_optimizer_options(group, *, adam_eps: float = 1e-8) -> None:
    """--weight-decay, --adam-betas, --adam-eps and --max-grad-norm, with the REBEL
    reference's values named next to RankLoop's defaults."""
    group.add_argument("--weight-decay", type=float, default=0.0,
                       help="AdamW weight decay (default: 0; the REBEL reference: 1e-6)")
    group.add_argument("--adam-betas", type=float, nargs=2, default=(0.9, 0.999),
                       metavar=("BETA1", "BETA2"),
                       help="AdamW betas (default: 0.9 0.999; the REBEL reference: 0.9 0.95)")
    group.add_argument("--adam-eps", type=float, default=adam_eps,
                       help=f"AdamW epsilon (default: {adam_eps:g})")
    group.add_argument("--max-grad-norm", type=float, default=1.0,
                       help="clip gradients to this global norm; 0: no clipping (default: 1.0; "
                            "the REBEL reference does not clip)")


def optimizer_settings(args: argparse.Namespace) -> dict:
    return dict(weight_decay=args.weight_decay, adam_betas=tuple(args.adam_betas),
                adam_eps=args.adam_eps, max_grad_norm=args.max_grad_norm)


def add_tracking_options(group) -> None:
    group.add_argument("--report-to", nargs="+", choices=("none", *TRACKERS), default=["none"],
                       metavar="TRACKER",
                       help="also send the metrics to tensorboard (DIR/tensorboard) and/or wandb "
                            "(WANDB_PROJECT, WANDB_MODE=offline work as usual); metrics.jsonl "
                            "is always written (default: none)")


def tracking_settings(args: argparse.Namespace) -> dict:
    return dict(report_to=tuple(n for n in args.report_to if n != "none"))
