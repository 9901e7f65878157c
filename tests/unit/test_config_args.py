"""The `rankloop train` commands are built from the recipes' config dataclasses: every field has
a flag whose help is its docstring and whose default is the dataclass's, so the two cannot
drift; the flag names users already have keep working; building the parser imports no recipe."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from launch import cli, cmd_export, cmd_policy, cmd_reward
from launch.config_args import (REQUIRED, ConfigSpec, add_config_options, config_from_args,
                                full_help, help_text, read_config, read_constant)

ROOT = Path(__file__).resolve().parents[2]
SPECS = {"reward": cmd_reward.REWARD, "sft": cmd_export.SFT, "rebel": cmd_policy.REBEL,
         "dpo": cmd_policy.DPO, "ppo": cmd_policy.PPO}
# Every flag these commands had before they were generated, as README, tests and scripts use
# them.
FLAGS_IN_USE = {
    "reward": "--db --data --split --eval-data --eval-fraction --agreed-only --limit --ties "
              "--max-length --model --output --lora-r --lora-alpha --lora-dropout "
              "--gradient-checkpointing --bf16 --no-bf16 --batch-size --grad-accum --epochs "
              "--max-steps --learning-rate --lr --lr-schedule --warmup-ratio --weight-decay "
              "--adam-betas --adam-eps --max-grad-norm --center-rewards --seed --log-every "
              "--eval-every --save-every --keep-checkpoints --no-resume --no-progress "
              "--report-to",
    "sft": "--db --from --data --split --raw-text --text-column --block-size --max-length "
           "--eval-fraction --model --output --gradient-checkpointing --bf16 --no-bf16 "
           "--batch-size --grad-accum --epochs --max-steps --learning-rate --lr --lr-schedule "
           "--warmup-ratio --weight-decay --adam-betas --adam-eps --max-grad-norm --seed "
           "--log-every --eval-every --no-progress --report-to",
    "rebel": "--db --data --split --scorer --run --pairs --limit --max-prompt-tokens "
             "--max-response-tokens --eval-fraction --model --output --lora-r --lora-alpha "
             "--gradient-checkpointing --bf16 --no-bf16 --batch-size --grad-accum --epochs "
             "--max-steps --learning-rate --lr --lr-schedule --warmup-ratio --weight-decay "
             "--adam-betas --adam-eps --max-grad-norm --seed --log-every --eval-every "
             "--save-every --no-resume --no-progress --report-to --eta --temperature",
    "ppo": "--db --scorer --reward-fn --prompts --limit --model --output --backend --steps "
           "--rollout-batch --minibatch --ppo-epochs --max-new-tokens --temperature --kl-coef "
           "--target-kl --missing-eos-penalty --learning-rate --lr --weight-decay --adam-betas "
           "--adam-eps --max-grad-norm --bf16 --no-bf16 --seed --log-every --save-every "
           "--no-resume --no-progress --report-to",
}
FLAGS_IN_USE["dpo"] = FLAGS_IN_USE["rebel"].replace("--eta --temperature", "--loss --beta")


def train_parsers() -> dict:
    parser = cli._build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    return commands.choices["train"]._rankloop_group.choices


def field_actions(parser, spec: ConfigSpec) -> dict:
    names = {f.name for f in dataclasses.fields(spec.load())} - set(spec.exclude)
    return {a.dest: a for a in parser._actions if a.dest in names}


def test_every_train_command_is_built_from_its_config():
    assert set(train_parsers()) == set(SPECS)


@pytest.mark.parametrize("command", sorted(SPECS))
def test_every_field_has_a_flag_with_its_docstring_and_default(command):
    spec, parser = SPECS[command], train_parsers()[command]
    real = {f.name: f for f in dataclasses.fields(spec.load())}
    read = {f.name: f for f in read_config(spec.module, spec.name)}
    assert list(read) == list(real)  # the source reading sees the dataclass's fields, in order
    actions = field_actions(parser, spec)
    assert set(actions) == set(real) - set(spec.exclude)
    assert set(spec.exclude) <= {"db"}  # the database: `--db` of `rankloop train` fills it
    for name, action in actions.items():
        field, shown = read[name], real[name]
        assert field.doc, f"{spec.name}.{name} has no docstring"
        if shown.default is dataclasses.MISSING:
            assert field.default is REQUIRED and action.required
        else:
            assert field.default == shown.default, name  # what --help shows is the default
        assert action.help == full_help(field)
        assert action.help.startswith(help_text(field.doc))


@pytest.mark.parametrize("command", sorted(SPECS))
def test_flags_not_given_leave_the_dataclass_defaults(command, tmp_path):
    spec = SPECS[command]
    required = ["--scorer", "bt:rm"] if command == "ppo" else ["--data", "pairs.jsonl"]
    args = cli._build_parser().parse_args(["train", command, "--output", "out", *required])
    extra = {} if command == "ppo" else {"db": None}
    config = config_from_args(spec, args, **extra)
    defaults = spec.load()(output="out", **({} if command == "ppo" else
                                            {"data": "pairs.jsonl", "db": None}))
    assert config == defaults


@pytest.mark.parametrize("command", sorted(SPECS))
def test_the_flags_users_have_keep_working(command):
    options = {o for a in train_parsers()[command]._actions for o in a.option_strings}
    assert set(FLAGS_IN_USE[command].split()) <= options


def test_renamed_flags_set_their_fields():
    args = cli._build_parser().parse_args(
        ["train", "dpo", "--data", "p.jsonl", "--output", "o", "--batch-size", "3",
         "--grad-accum", "2", "--lr", "0.5", "--pairs", "all", "--run", "7", "--loss", "ipo",
         "--no-resume", "--adam-betas", "0.8", "0.9", "--report-to", "none", "--bf16",
         "--lora-r", "0"])
    config = config_from_args(cmd_policy.DPO, args, db=None)
    assert (config.per_device_batch_size, config.gradient_accumulation_steps,
            config.learning_rate, config.pair_mode, config.run_id, config.loss_type) == (
        3, 2, 0.5, "all", 7, "ipo")
    assert (config.resume, config.adam_betas, config.report_to, config.bf16, config.lora_r) == (
        False, (0.8, 0.9), (), True, 0)
    ppo = config_from_args(cmd_policy.PPO, cli._build_parser().parse_args(
        ["train", "ppo", "--scorer", "bt:x", "--output", "o", "--steps", "5",
         "--rollout-batch", "8", "--minibatch", "2", "--no-whiten-advantages"]))
    assert (ppo.total_steps, ppo.rollout_batch_size, ppo.minibatch_size,
            ppo.whiten_advantages) == (5, 8, 2, False)


def test_counts_are_checked_as_they_are_parsed(capsys):
    with pytest.raises(SystemExit):
        cli._build_parser().parse_args(["train", "sft", "--output", "o", "--batch-size", "0"])
    assert "--batch-size: must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli._build_parser().parse_args(["train", "rebel", "--output", "o", "--lora-r", "-1"])
    assert "--lora-r: must be at least 0, got -1" in capsys.readouterr().err


def test_choices_come_from_the_recipes_constants():
    from data.scored_pairs import MODES
    from policy.losses import DPO_LOSSES
    from policy.sft import DB_SOURCES
    from reward.train_bt import TIES
    from training.metrics import TRACKERS
    from training.optim import SCHEDULES

    dpo = {a.dest: a for a in train_parsers()["dpo"]._actions}
    assert (dpo["pair_mode"].choices, dpo["loss_type"].choices, dpo["lr_schedule"].choices,
            dpo["report_to"].choices) == (MODES, DPO_LOSSES, SCHEDULES, ("none", *TRACKERS))
    assert read_constant("reward.train_bt", "TIES") == TIES
    assert read_constant("policy.sft", "DB_SOURCES") == DB_SOURCES


def test_a_new_field_gets_a_flag_and_a_type_without_a_form_is_refused(tmp_path, monkeypatch):
    (tmp_path / "toy_recipe.py").write_text(
        "from dataclasses import dataclass\n\n\n"
        "@dataclass\nclass ToyConfig:\n"
        "    output: str\n    '''Where to write.'''\n"
        "    kl_budget: float | None = None\n    '''Stop once the KL passes this; 50% is a lot.'''\n"
        "    sizes: tuple[int, ...] = (1, 2)\n    '''Sizes to try.'''\n"
        "    mode: 'Literal[\"a\", \"b\"]' = 'a'\n    '''a or b.'''\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import argparse

    parser = argparse.ArgumentParser()
    spec = ConfigSpec("toy_recipe", "ToyConfig", title="toy")
    add_config_options(parser, spec)
    help_ = parser.format_help()
    assert "--kl-budget X" in help_ and "50% is a lot" in help_
    config = config_from_args(spec, parser.parse_args(
        ["--output", "o", "--kl-budget", "0.5", "--sizes", "3", "4", "--mode", "b"]))
    assert (config.kl_budget, config.sizes, config.mode) == (0.5, (3, 4), "b")
    with pytest.raises(SystemExit):
        parser.parse_args(["--output", "o", "--mode", "c"])


def test_building_the_parser_imports_no_recipe():
    code = ("import sys\nfrom launch import cli\ncli._build_parser()\n"
            "print(sorted(m for m in ('torch', 'transformers', 'policy.rebel', 'reward.train_bt')"
            " if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
