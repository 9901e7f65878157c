"""Command-line options built from a recipe's config dataclass, so a setting is declared once.

Each field of the config (``RebelConfig``, ``RewardTrainConfig``, ...) becomes one flag: its
name (``eta`` → ``--eta``, or a name users already have from ``FLAG_NAMES``), its type (a bool
is ``--x/--no-x``, a tuple takes several values, ``X | None`` takes an X), its docstring as the
help and its default shown after it. The fields are read from the config's source with ``ast``,
as tyro-like tools read field docstrings, so building the parser imports no recipe (and so no
torch). A flag not given is not passed to the config: the dataclass's own default applies, and
the command line cannot hold a default of its own that drifts.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import inspect
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

REQUIRED = object()
"""The default of a field that has none: its flag is required."""

# The flag names users already have where they differ from the field's name.
FLAG_NAMES: dict[str, tuple[str, ...]] = {
    "per_device_batch_size": ("--batch-size",),
    "gradient_accumulation_steps": ("--grad-accum",),
    "learning_rate": ("--learning-rate", "--lr"),
    "pair_mode": ("--pairs",),
    "run_id": ("--run",),
    "center_rewards_coefficient": ("--center-rewards",),
    "total_steps": ("--steps",),
    "rollout_batch_size": ("--rollout-batch",),
    "minibatch_size": ("--minibatch",),
    "loss_type": ("--loss",),
    "db_source": ("--from",),
}

METAVARS: dict[str, str | tuple[str, ...]] = {
    "output": "DIR", "model": "MODEL", "split": "SPLIT", "text_column": "COLUMN",
    "report_to": "TRACKER", "data": "SOURCE", "eval_data": "SOURCE", "prompts": "SOURCE",
    "scorer": "KIND:DIR", "run_id": "ID", "adam_betas": ("BETA1", "BETA2"),
}
# Short placeholders keep the usage lines readable; a field with choices lists them instead.
_TYPE_METAVARS = {int: "N", float: "X", str: "TEXT"}

# Help sections, in the order --help shows them; a field not listed here is one of the
# recipe's own settings and goes to the section named after the recipe.
SECTIONS: dict[str, tuple[str, ...]] = {
    "data": ("data", "split", "db_source", "eval_data", "eval_fraction", "agreed_only",
             "scorer", "run_id", "pair_mode", "prompts", "limit", "ties", "raw_text",
             "text_column", "block_size", "max_length", "max_prompt_tokens",
             "max_response_tokens"),
    "model": ("model", "output", "lora_r", "lora_alpha", "lora_dropout",
              "gradient_checkpointing", "bf16"),
    "optimization": ("per_device_batch_size", "eval_batch_size", "gradient_accumulation_steps",
                     "epochs", "max_steps", "learning_rate", "lr_schedule", "warmup_ratio",
                     "weight_decay", "adam_betas", "adam_eps", "max_grad_norm", "seed"),
    "logging and checkpoints": ("log_every", "eval_every", "save_every", "keep_checkpoints",
                                "resume", "report_to"),
}
_RECIPE_SECTION_AFTER = "optimization"

# Allowed values of fields several recipes share; a spec adds its own.
COMMON_CHOICES: dict[str, Sequence[str] | str] = {
    "lr_schedule": "training.optim:SCHEDULES",
    "report_to": ("none", "tensorboard", "wandb"),  # training.metrics.TRACKERS, or none
}


@dataclass(frozen=True)
class ConfigField:
    name: str
    type: object
    """The evaluated annotation (``int``, ``float | None``, ``tuple[float, float]``, ...)."""
    default: object
    """The default as written in the source (a literal), or ``REQUIRED``."""
    default_text: str
    """The default's source text, shown when it is not a literal (a module constant)."""
    doc: str

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class ConfigSpec:
    """A recipe's config as a command sees it."""

    module: str
    name: str
    title: str
    """The help section of the recipe's own settings (``REBEL``, ``PPO``, ...)."""
    exclude: tuple[str, ...] = ()
    """Fields that are not user settings, or that the command fills itself (``db``)."""
    choices: Mapping[str, Sequence[str] | str] = field(default_factory=dict)
    """Allowed values per field: a tuple, or ``"module:CONSTANT"`` read from that module's
    source."""

    def fields(self) -> list[ConfigField]:
        return [f for f in read_config(self.module, self.name) if f.name not in self.exclude]

    def field_choices(self, name: str) -> tuple[str, ...] | None:
        value = self.choices.get(name, COMMON_CHOICES.get(name))
        if isinstance(value, str):
            module, constant = value.split(":")
            return tuple(read_constant(module, constant))
        return tuple(value) if value is not None else None

    def load(self) -> type:
        return getattr(importlib.import_module(self.module), self.name)


# ---------------------------------------------------------------------------------------------
# Reading a config class from its source
# ---------------------------------------------------------------------------------------------

@cache
def _module_tree(module: str) -> tuple[ast.Module, str]:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ImportError(f"no source for module {module}")
    source = Path(spec.origin).read_text(encoding="utf-8")
    return ast.parse(source), source


_TYPE_NAMES = {"int": int, "float": float, "str": str, "bool": bool, "tuple": tuple,
               "None": None, "Literal": typing.Literal, "Optional": typing.Optional}


@cache
def read_config(module: str, name: str) -> tuple[ConfigField, ...]:
    """The fields of dataclass ``name`` in ``module``, base classes' first, as ``dataclasses``
    orders them: a field redeclared by a subclass keeps its place and takes the new default,
    and the docstring too when the subclass gives one."""
    tree, source = _module_tree(module)
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    if name not in classes:
        raise LookupError(f"no class {name} in {module}")
    imported = {alias.asname or alias.name: node.module for node in tree.body
                if isinstance(node, ast.ImportFrom) and node.module for alias in node.names}
    fields: dict[str, ConfigField] = {}
    classdef = classes[name]
    for base in classdef.bases:
        if isinstance(base, ast.Name) and base.id in classes:
            fields.update((f.name, f) for f in read_config(module, base.id))
        elif isinstance(base, ast.Name) and base.id in imported:
            fields.update((f.name, f) for f in read_config(imported[base.id], base.id))
    body = classdef.body
    for i, stmt in enumerate(body):
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        annotation = (stmt.annotation.value if isinstance(stmt.annotation, ast.Constant)
                      else ast.unparse(stmt.annotation))  # a quoted annotation: its text
        if annotation.startswith(("ClassVar", "typing.ClassVar")):
            continue
        after = body[i + 1] if i + 1 < len(body) else None
        doc = (inspect.cleandoc(after.value.value) if isinstance(after, ast.Expr)
               and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)
               else "")
        inherited = fields.get(stmt.target.id)
        if stmt.value is None:
            default, text = REQUIRED, ""
        else:
            text = ast.get_source_segment(source, stmt.value) or ast.unparse(stmt.value)
            try:
                default = ast.literal_eval(stmt.value)
            except ValueError:
                default = None  # not a literal: the dataclass's own value applies; shown as text
        fields[stmt.target.id] = ConfigField(
            name=stmt.target.id, type=eval(annotation, {"__builtins__": {}}, _TYPE_NAMES),
            default=default, default_text=text,
            doc=doc or (inherited.doc if inherited else ""))
    return tuple(fields.values())


def read_constant(module: str, name: str):
    """A module-level literal such as ``SCHEDULES = ("cosine", ...)``, read from the source."""
    tree, _ = _module_tree(module)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"no constant {name} in {module}")


# ---------------------------------------------------------------------------------------------
# Fields to flags
# ---------------------------------------------------------------------------------------------

def flag_names(name: str) -> tuple[str, ...]:
    return FLAG_NAMES.get(name, ("--" + name.replace("_", "-"),))


def help_text(doc: str) -> str:
    """A field docstring as one line of help: reST literals plain, ``%`` escaped."""
    text = re.sub(r"``(.*?)``", r"\1", " ".join(doc.split()))
    return text.replace("%", "%%")


def default_text(f: ConfigField) -> str | None:
    """The default as --help shows it; None where there is nothing to show."""
    value = f.default
    if f.required or f.default_text == "None":
        return None
    if value is None:  # not a literal: the source text, e.g. a module constant's name
        return f.default_text
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) or "none"
    return str(value)


def full_help(f: ConfigField) -> str:
    shown = default_text(f)
    text = help_text(f.doc)
    return f"{text} (default: {shown})" if shown is not None else text


def _strip_optional(tp):
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return tp


def count_type(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    parse.__name__ = "int"  # argparse names the type in its "invalid int value" message
    return parse


def argument_options(f: ConfigField, choices: tuple[str, ...] | None) -> dict:
    """``add_argument`` keywords for one field. An int is a count (at least 1), or at least 0
    where its default is 0 (a LoRA rank, a seed)."""
    options: dict = {"dest": f.name, "help": full_help(f), "default": argparse.SUPPRESS}
    if f.required:
        options["required"] = True
    tp = _strip_optional(f.type)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        choices, tp = tuple(args), type(args[0])
        origin = None
    if tp is bool:
        options["action"] = argparse.BooleanOptionalAction
    elif origin is tuple:
        item = args[0]
        options["type"] = count_type(1) if item is int else item
        options["nargs"] = "+" if len(args) == 2 and args[1] is Ellipsis else len(args)
    elif tp is int:
        options["type"] = count_type(0 if f.default == 0 else 1)
    elif tp in (float, str):
        options["type"] = tp
    else:
        raise TypeError(f"config field {f.name}: no command-line form for type {f.type!r}")
    if choices is not None:
        options["choices"] = choices
    if f.name in METAVARS:
        options["metavar"] = METAVARS[f.name]
    elif choices is None and tp in _TYPE_METAVARS:
        options["metavar"] = _TYPE_METAVARS[tp]
    elif choices is None and origin is tuple and args[0] in _TYPE_METAVARS:
        options["metavar"] = _TYPE_METAVARS[args[0]]
    return options


def add_config_options(parser: argparse.ArgumentParser, spec: ConfigSpec) -> None:
    """One flag per field of ``spec``'s config, in help sections (data, model, optimization,
    the recipe's own, logging and checkpoints)."""
    fields = spec.fields()
    titles = list(SECTIONS)
    titles.insert(titles.index(_RECIPE_SECTION_AFTER) + 1, spec.title)
    section_of = {name: title for title, names in SECTIONS.items() for name in names}
    groups = {}
    for title in titles:
        members = [f for f in fields if section_of.get(f.name, spec.title) == title]
        if members:
            groups[title] = parser.add_argument_group(title)
            for f in members:
                groups[title].add_argument(*flag_names(f.name),
                                           **argument_options(f, spec.field_choices(f.name)))


def config_from_args(spec: ConfigSpec, args: argparse.Namespace, **values):
    """The config of the flags given (the others keep the dataclass's defaults), plus
    ``values`` the command fills itself."""
    given = {}
    for f in spec.fields():
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            given[f.name] = tuple(value) if isinstance(value, list) else value
    return spec.load()(**given, **values)
