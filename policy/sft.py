"""Supervised fine-tuning: the recipe.

    rankloop train sft --from demonstrations --output runs/sft
    rankloop train sft --data chats.jsonl --output runs/sft
    rankloop train sft --data corpus.jsonl --raw-text --block-size 512 --output runs/dapt
    accelerate launch --config_file launch/configs/zero3-cpu2.yaml -m launch.cli \\
        train sft --data chats.jsonl --output runs/sft

Chat mode: each example is a conversation (the app's demonstrations, its chosen responses, or
a dataset's ``messages`` column), rendered with the model's chat template; the loss covers the
assistant turns only (their text and the template's end-of-turn tokens), never the system or
user turns. Conversations longer than ``max_length`` tokens are dropped and counted.

Raw-text mode: a causal LM on domain text (``text`` column, or ``.txt`` files): documents are
tokenized, joined with the end-of-sequence token and cut into ``block_size`` blocks; every
token is trained. Held-out documents are chosen before packing, so no block straddles both.

The loss of a step is the sum of token losses over all its micro-batches (all ranks, all
accumulation steps) divided by the trained tokens of the whole step: the update does not
depend on how the step is split. The steps run on the training layer's loop
(``training.steps.run_steps``, as for the reward model, REBEL and DPO), which batches, clips,
logs and evaluates; SFT writes no resumable checkpoints. The output folder is a plain Hugging Face causal LM with its
tokenizer, usable as ``--model`` for generation and the next training stage.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from data.errors import ConfigError
from training.metrics import saved_line
from training.settings import TrainingSettings, require_at_least_one

IGNORE = -100
DB_SOURCES = ("demonstrations", "chosen")
SETTINGS_FILE = "rankloop_sft.json"


class SFTDataError(ConfigError):
    """Training data that cannot be used, with a message meant for the user."""


@dataclass
class SFTConfig(TrainingSettings):
    """Settings of the SFT recipe (``training.settings`` has the shared ones)."""

    output: str
    """Folder for the fine-tuned model (a Hugging Face folder), ``metrics.jsonl`` and the
    settings used (``rankloop_sft.json``)."""
    data: str | None = None
    """``.jsonl``/``.json``/``.parquet``/``.csv`` file, ``save_to_disk`` folder or Hub id (with
    ``--raw-text`` also a ``.txt`` file); None reads ``db_source`` from ``db``."""
    db_source: str = "demonstrations"
    """From the database: ``demonstrations`` written in the app, or the ``chosen`` responses
    (the best-ranked response of each vote)."""
    raw_text: bool = False
    """Train on plain text packed into blocks instead of chat conversations."""
    text_column: str = "text"
    """Raw-text mode: the column holding the documents."""
    block_size: int = 512
    """Raw-text mode: tokens per packed block."""
    max_length: int = 1024
    """Chat mode: conversations longer than this many tokens are dropped (and counted)."""
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.03
    eval_every: int | None = None
    """Evaluate every this many steps; None evaluates before training and at each epoch end."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.db_source not in DB_SOURCES:
            raise ConfigError(f"--from must be one of {', '.join(DB_SOURCES)}")
        require_at_least_one(self, "max_length", "block_size")


@dataclass(frozen=True)
class SFTExample:
    input_ids: list[int]
    labels: list[int]
    """Aligned with input_ids: the token itself where it is trained, else -100."""
    group: str
    """Examples of one group (a prompt, a document) are held out together."""

    @property
    def length(self) -> int:
        return len(self.input_ids)

    @property
    def trained_tokens(self) -> int:
        """Tokens whose prediction is trained (a label at position t is predicted at t-1)."""
        return sum(label != IGNORE for label in self.labels[1:])


# ---------------------------------------------------------------------------------------------
# Tokenizing (pure given a tokenizer)
# ---------------------------------------------------------------------------------------------

def assistant_spans(tokenizer, messages: Sequence[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns.

    Each span runs from where the template starts the reply (the rendering of the turns before
    it with ``add_generation_prompt``) to the end of that turn's rendering, so it includes the
    end-of-turn tokens that teach the model to stop.
    """
    from data.chat import ChatTemplateError, format_chat

    def render(turns, generation_prompt=False):
        return tokenizer.apply_chat_template(list(turns), tokenize=False,
                                             add_generation_prompt=generation_prompt)

    format_chat(tokenizer, messages[:1])  # a clear error when there is no chat template
    text = render(messages)
    spans = []
    for i, turn in enumerate(messages):
        if turn["role"] != "assistant":
            continue
        start = len(render(messages[:i], True)) if i else 0
        end = len(render(messages[:i + 1]))
        if not text.startswith(render(messages[:i + 1])) or start > end:
            raise ChatTemplateError(
                f"the chat template of {getattr(tokenizer, 'name_or_path', 'this model')!r} "
                "renders a conversation differently from its beginning; cannot find the "
                "assistant turns")
        spans.append((start, end))
    return text, spans


def encode_conversation(tokenizer, messages: Sequence[dict], group: str = "") -> SFTExample:
    """Token ids of the rendered conversation, labels only on assistant tokens."""
    text, spans = assistant_spans(tokenizer, messages)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = []
    for token, (start, _end) in zip(encoded["input_ids"], encoded["offset_mapping"]):
        trained = any(s <= start < e for s, e in spans)
        labels.append(token if trained else IGNORE)
    return SFTExample(list(encoded["input_ids"]), labels, group)


def pack_blocks(documents: Sequence[Sequence[int]], block_size: int, eos_token_id: int,
                group: str = "") -> list[SFTExample]:
    """Documents joined, each followed by ``eos_token_id``, cut into full blocks of
    ``block_size`` tokens; the short remainder is dropped. Every token is trained."""
    stream: list[int] = []
    for document in documents:
        stream.extend(document)
        stream.append(eos_token_id)
    return [SFTExample(stream[i:i + block_size], stream[i:i + block_size], f"{group}{i}")
            for i in range(0, len(stream) - block_size + 1, block_size)]


# ---------------------------------------------------------------------------------------------
# Reading data
# ---------------------------------------------------------------------------------------------

def _read_rows(source: str, split: str) -> list[dict]:
    from data.prompts import PromptSourceError, read_rows

    path = Path(source).expanduser()
    try:
        if path.is_file() and path.suffix.lower() == ".txt":
            return [{"text": path.read_text(encoding="utf-8")}]
        if path.suffix.lower() == ".txt" and not path.exists():
            raise SFTDataError(f"data file {source} does not exist")
        return read_rows(source, split, what="data")[0]
    except PromptSourceError as exc:  # the shared readers speak of prompts; same message
        raise SFTDataError(str(exc)) from None
    except UnicodeDecodeError:
        raise SFTDataError(f"{source} is not valid UTF-8") from None


def conversations_from_rows(rows: Sequence[dict], label: str) -> list[list[dict]]:
    """``messages`` chat lists; or TRL preference rows (``prompt`` + ``chosen``), trained on
    the chosen response. Conversations without an assistant turn are an error."""
    from data.prompts import ROLES

    if not rows:
        raise SFTDataError(f"{label} contains no rows")
    columns = list(rows[0])
    if "messages" not in columns and not {"prompt", "chosen"} <= set(columns):
        raise SFTDataError(
            f"{label} has no 'messages' column (columns: {', '.join(map(str, columns))}); "
            "chat data needs 'messages' (or TRL 'prompt' + 'chosen'); plain text needs "
            "--raw-text")
    out = []
    for number, row in enumerate(rows, start=1):
        if "messages" in row:
            messages = row["messages"]
        else:
            prompt, chosen = row["prompt"], row["chosen"]
            prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            chosen = ([{"role": "assistant", "content": chosen}] if isinstance(chosen, str)
                      else chosen)
            messages = list(prompt) + list(chosen)
        if not isinstance(messages, list) or not all(
                isinstance(m, dict) and m.get("role") in ROLES
                and isinstance(m.get("content"), str) for m in messages):
            raise SFTDataError(f"{label} row {number}: a chat message must be "
                               f"{{'role': one of {ROLES}, 'content': str}}")
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
        if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
            raise SFTDataError(f"{label} row {number} has no assistant turn to learn from")
        out.append(messages)
    return out


def read_conversations(config: SFTConfig) -> tuple[list[list[dict]], str]:
    """(conversations, where they came from)."""
    if config.data:
        return conversations_from_rows(_read_rows(config.data, config.split), config.data), \
            config.data
    from data import store
    from data.export import sft_conversations

    label = f"database {config.db}"
    conversations = sft_conversations(store.open_store(config.db), config.db_source)
    if not conversations:
        what = ("demonstrations (answers written in the app)" if config.db_source ==
                "demonstrations" else "ranked responses")
        raise SFTDataError(f"{label} has no {what} yet; write some in `rankloop app`, use "
                           "--from chosen, or pass --data")
    return conversations, f"{label} ({config.db_source})"


def read_documents(config: SFTConfig) -> list[str]:
    if not config.data:
        raise SFTDataError("--raw-text needs --data with a text column or a .txt file")
    rows = _read_rows(config.data, config.split)
    if not rows or config.text_column not in rows[0]:
        columns = ", ".join(map(str, rows[0])) if rows else "none"
        raise SFTDataError(f"{config.data} has no column {config.text_column!r} "
                           f"(columns: {columns}); choose one with --text-column")
    return [str(row[config.text_column]) for row in rows
            if row.get(config.text_column) and str(row[config.text_column]).strip()]


def prepare_examples(config: SFTConfig, tokenizer) -> tuple[list[SFTExample], list[SFTExample],
                                                           dict[str, int], str]:
    """(train, held-out, dropped counts by reason, source label)."""
    from training.plan import split_held_out

    dropped: dict[str, int] = {}
    if config.raw_text:
        documents = read_documents(config)
        encoded = tokenizer(documents, add_special_tokens=False)["input_ids"]
        units = [SFTExample(ids, ids, f"doc{i}") for i, ids in enumerate(encoded)]
        train_docs, eval_docs = split_held_out(units, config.eval_fraction, config.seed)
        eos = tokenizer.eos_token_id
        train = pack_blocks([d.input_ids for d in train_docs], config.block_size, eos, "train")
        held_out = pack_blocks([d.input_ids for d in eval_docs], config.block_size, eos, "eval")
        if not train:
            total = sum(len(d) + 1 for d in encoded)
            raise SFTDataError(
                f"{config.data} has {total} tokens, fewer than one block of {config.block_size} "
                "for training; lower --block-size or add text")
        return train, held_out, dropped, config.data
    conversations, label = read_conversations(config)
    examples = []
    for messages in conversations:
        prompt = [m for m in messages if m["role"] != "assistant"]
        example = encode_conversation(tokenizer, messages, json.dumps(prompt, sort_keys=True))
        if example.length > config.max_length:
            dropped[f"longer than {config.max_length} tokens"] = dropped.get(
                f"longer than {config.max_length} tokens", 0) + 1
        elif example.trained_tokens == 0:
            dropped["no assistant tokens"] = dropped.get("no assistant tokens", 0) + 1
        else:
            examples.append(example)
    train, held_out = split_held_out(examples, config.eval_fraction, config.seed)
    if not train:
        raise SFTDataError(f"no training examples left from {label} (dropped: "
                           f"{', '.join(f'{n} {k}' for k, n in dropped.items()) or 'none'})")
    return train, held_out, dropped, label


# ---------------------------------------------------------------------------------------------
# Tensors and the loss
# ---------------------------------------------------------------------------------------------

@dataclass
class SFTBatch:
    """input_ids, attention_mask, labels: ``[B, T]``, right-padded to the longest example;
    labels are -100 on padding and on tokens that are not trained."""

    input_ids: object
    attention_mask: object
    labels: object

    def to(self, device) -> SFTBatch:
        return SFTBatch(self.input_ids.to(device), self.attention_mask.to(device),
                        self.labels.to(device))


def collate(examples: Sequence[SFTExample], pad_token_id: int) -> SFTBatch:
    import torch

    width = max(e.length for e in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        input_ids[row, :e.length] = torch.tensor(e.input_ids)
        labels[row, :e.length] = torch.tensor(e.labels)
        mask[row, :e.length] = 1
    return SFTBatch(input_ids, mask, labels)


def token_nll(logits, labels):
    """Each example's summed next-token negative log-likelihood.

    logits ``[B, T, V]``, labels ``[B, T]`` (-100 = not trained) → ``[B]``: position t
    predicts label t+1.
    """
    import torch.nn.functional as F

    shifted_logits = logits[:, :-1, :].float()
    shifted_labels = labels[:, 1:]
    loss = F.cross_entropy(shifted_logits.reshape(-1, shifted_logits.shape[-1]),
                           shifted_labels.reshape(-1), ignore_index=IGNORE, reduction="none")
    return loss.view(shifted_labels.shape).sum(-1)


def token_nll_sum(logits, labels):
    """Summed next-token negative log-likelihood and the number of trained tokens (scalars)."""
    return token_nll(logits, labels).sum(), (labels[:, 1:] != IGNORE).sum()


def batch_stats(model, batch: SFTBatch):
    """(per-example summed token loss ``[B]``, stats ``[3]``: summed loss, trained tokens,
    all tokens) of a batch already on the model's device."""
    import torch

    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    per_example = token_nll(logits, batch.labels)
    trained = (batch.labels[:, 1:] != IGNORE).sum()
    stats = torch.stack([per_example.detach().float().sum(), trained.float(),
                         batch.attention_mask.sum().float()]).cpu()
    return per_example, stats


def stats_to_metrics(stats, prefix: str) -> dict[str, float]:
    """Summed (loss, trained tokens, all tokens) → loss per trained token."""
    loss, trained = float(stats[0]), float(stats[1])
    return {f"{prefix}/loss": loss / max(trained, 1), f"{prefix}/tokens": trained}


def evaluate(model, accelerator, examples: Sequence[SFTExample], *, batch_size: int,
             pad_token_id: int) -> dict[str, float]:
    """Held-out loss per trained token, over every process (``training.steps.held_out_stats``
    spreads the batches)."""
    from training.steps import held_out_stats

    if not examples:
        return {}

    def stats_of(indices: list[int]):
        batch = collate([examples[i] for i in indices], pad_token_id).to(accelerator.device)
        return batch_stats(model, batch)[1]

    totals = held_out_stats(model, accelerator, [e.length for e in examples],
                            batch_size=batch_size, num_stats=3, stats_of=stats_of)
    return stats_to_metrics(totals, "eval")


# ---------------------------------------------------------------------------------------------
# The recipe
# ---------------------------------------------------------------------------------------------

@dataclass
class SFTSummary:
    output: str
    steps: int
    train_examples: int
    eval_examples: int
    source: str
    dropped: dict[str, int]
    first_eval_loss: float | None
    eval_loss: float | None
    tokens_per_second: float
    main_process: bool = True
    """False on the other ranks of a distributed run, which should stay quiet."""

    def line(self) -> str:
        parts = [f"{self.train_examples} training examples from {self.source}, "
                 f"{self.eval_examples} held out", f"{self.steps} steps"]
        if self.eval_loss is not None:
            parts.append(f"held-out loss {self.first_eval_loss:.4f} -> {self.eval_loss:.4f}")
        parts.append(f"{self.tokens_per_second:.0f} tokens/s")
        return saved_line("fine-tuned model", self.output, parts, dropped=self.dropped)


def train_sft(config: SFTConfig, *, progress: bool = True) -> SFTSummary:
    """Fine-tunes, evaluates and saves a causal LM; see the module docstring."""
    import torch
    from accelerate.utils import set_seed
    from transformers import AutoModelForCausalLM

    from training.accel import make_accelerator
    from training.metrics import MetricsLog
    from training.models import ModelNotFoundError, load_tokenizer, resolve_model
    from training.plan import StepPlan
    from training.steps import prepare_optimization, run_steps

    output = Path(config.output)
    # 1. Data: read and tokenize (bad input fails here, before anything heavy starts), hold
    #    out prompts or documents, plan the steps.
    model_path = resolve_model(config.model)
    tokenizer = load_tokenizer(model_path, padding_side="right")
    train, held_out, dropped, source = prepare_examples(config, tokenizer)
    accelerator = make_accelerator(gradient_accumulation_steps=config.gradient_accumulation_steps,
                                   bf16=config.bf16, report_to=config.report_to, output=output)
    world = accelerator.num_processes
    say = accelerator.print
    set_seed(config.seed)
    plan = StepPlan(len(train), world, config.per_device_batch_size,
                    config.gradient_accumulation_steps, config.epochs, config.max_steps)
    if len(train) < plan.micro_batches_per_step:
        raise SFTDataError(f"only {len(train)} training examples for "
                           f"{plan.micro_batches_per_step} micro-batches per step ({world} "
                           f"processes × {config.gradient_accumulation_steps} accumulation steps)")
    say(f"rankloop: {len(train)} training examples, {len(held_out)} held out; {plan.total_steps} "
        f"steps of {plan.global_batch_size} examples ({world} processes × "
        f"{config.per_device_batch_size} × {config.gradient_accumulation_steps} accumulation)")

    # 2. Model (after the accelerator, so ZeRO-3 can partition it as it loads), optimizer.
    try:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    except OSError as exc:
        raise ModelNotFoundError(f"cannot load model {model_path!r}: "
                                 f"{str(exc).strip().splitlines()[0]}") from None
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    model, optimizer, scheduler = prepare_optimization(accelerator, model, config,
                                                       plan.total_steps)
    log = MetricsLog(output / "metrics.jsonl", enabled=accelerator.is_main_process,
                     accelerator=accelerator, settings=asdict(config))
    pad_id = tokenizer.pad_token_id

    def held_out_metrics() -> dict[str, float]:
        return evaluate(model, accelerator, held_out, batch_size=config.per_device_batch_size,
                        pad_token_id=pad_id)

    first_eval = held_out_metrics()  # the starting point the held-out loss is compared with
    if first_eval:
        log.log(0, first_eval)

    # 3. Train on the shared step loop: each step is one global batch, its loss the mean over
    #    every trained token of the step.
    def forward(indices: list[int]):
        batch = collate([train[i] for i in indices], pad_id).to(accelerator.device)
        return batch_stats(model, batch)

    done = run_steps(
        accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler,
        plan=plan, config=config, lengths=[e.length for e in train], start_step=0,
        forward=forward, num_stats=3, metrics=stats_to_metrics,
        evaluate=held_out_metrics if held_out else None, log=log, output=output,
        fingerprint={}, desc="sft", progress=progress, tokens_stat=2,
        example_sizes=[e.trained_tokens for e in train], unit="examples")
    eval_metrics = done.eval_metrics or first_eval
    total_steps = plan.total_steps

    # 4. Save a plain Hugging Face folder with the tokenizer and the settings used.
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)  # every rank takes part under ZeRO-3
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.config.use_cache = True
        unwrapped.save_pretrained(output, state_dict=state_dict, safe_serialization=True)
        tokenizer.padding_side = "left"  # as the next stage, generation, wants it
        tokenizer.save_pretrained(output)
        settings = {**asdict(config), "train_examples": len(train),
                    "eval_examples": len(held_out), "steps": total_steps, "world_size": world,
                    "dropped": dropped, "source": source, "eval": eval_metrics}
        (output / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    accelerator.wait_for_everyone()
    log.close()
    return SFTSummary(
        output=str(output), steps=total_steps, train_examples=len(train),
        eval_examples=len(held_out), source=source, dropped=dropped,
        first_eval_loss=first_eval.get("eval/loss"), eval_loss=eval_metrics.get("eval/loss"),
        tokens_per_second=done.tokens_per_second, main_process=accelerator.is_main_process,
    )
