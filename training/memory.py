"""Memory: what a training run will need, checked before the model loads, and what it used.

A run that cannot fit is refused up front with the estimate, instead of being killed by the
kernel halfway (taking its neighbours with it). The estimate counts, in the training dtype:

- weights, their gradients and AdamW's two moments (16 bytes per trainable fp32 weight, the
  weights alone for frozen ones), divided over the processes under ZeRO-3;
- the activations a backward pass keeps, per token of the largest micro-batch and per layer:
  about (6 × hidden + 3 × intermediate) values for a Llama-style block (attention inputs and
  outputs, the norms, the gated MLP's three projections), or the layer's input alone with
  gradient checkpointing (one layer's activations recomputed at a time);
- for a policy, the logits it holds at once (a chunk of response tokens × the vocabulary:
  ``policy.logprobs``), in fp32 with their log-softmax, its gradient and the recomputed
  copy.

Memory the process already holds (Python, torch, the tokenizer: about 1 GiB on CPU) is not in
the estimate, since the memory available now already excludes it. The estimate is a floor to
refuse hopeless runs, not a promise that a run which passes has room to spare.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

from data.errors import ConfigError

GIB = 2**30
ADAM_BYTES_PER_WEIGHT = 16
"""fp32 weight + gradient + AdamW's first and second moments."""
LOGIT_BYTES = 16
"""Per logit held: fp32 logits, their exponentials, their gradient and the recomputed copy."""


def parameter_count(model_config) -> int:
    """Weights of a Llama-style decoder described by a transformers config (embedding, and the
    output head when it is not tied, plus attention and gated MLP per layer)."""
    h, layers = model_config.hidden_size, model_config.num_hidden_layers
    inner = getattr(model_config, "intermediate_size", 4 * h)
    heads = model_config.num_attention_heads
    kv_heads = getattr(model_config, "num_key_value_heads", None) or heads
    head_dim = getattr(model_config, "head_dim", None) or h // heads
    attention = h * heads * head_dim * 2 + h * kv_heads * head_dim * 2
    mlp = 3 * h * inner
    embedding = model_config.vocab_size * h
    tied = getattr(model_config, "tie_word_embeddings", True)
    return embedding * (1 if tied else 2) + layers * (attention + mlp + 2 * h) + h


def training_bytes(model_config, *, micro_batch_tokens: int, world: int = 1,
                   zero3: bool = False, trainable_share: float = 1.0,
                   gradient_checkpointing: bool = False, logit_elements: int = 0,
                   activation_bytes: int = 4) -> int:
    """Bytes one process needs to train: see the module docstring.
    ``micro_batch_tokens``: sequences × padded length of the largest micro-batch;
    ``trainable_share``: the share of weights that train (LoRA trains few);
    ``logit_elements``: the most logits held at once (0: none, a reward model);
    ``activation_bytes``: 2 under bf16 mixed precision (the weights stay fp32)."""
    params = parameter_count(model_config)
    state = params * (4 + trainable_share * (ADAM_BYTES_PER_WEIGHT - 4))
    if zero3 and world > 1:
        state /= world
    h, layers = model_config.hidden_size, model_config.num_hidden_layers
    inner = getattr(model_config, "intermediate_size", 4 * h)
    per_layer = 6 * h + 3 * inner
    if gradient_checkpointing:
        activations = micro_batch_tokens * (layers * h + per_layer)
    else:
        activations = micro_batch_tokens * layers * per_layer
    return int(state + activations * activation_bytes + logit_elements * LOGIT_BYTES)


def check_training_memory(accelerator, model_path: str, *, micro_batch_tokens: int,
                          gradient_checkpointing: bool, lora: bool,
                          logit_chunk_elements: int = 0, what: str) -> str:
    """Refuses, before the model loads, a run that cannot fit this process's device; returns
    the plan's memory line otherwise. ``logit_chunk_elements``: how many logits a policy
    computes at once (0: a reward model, none)."""
    from accelerate.utils import DistributedType
    from transformers import AutoConfig

    zero3 = (accelerator.distributed_type == DistributedType.DEEPSPEED
             and accelerator.state.deepspeed_plugin.zero_stage == 3)
    model_config = AutoConfig.from_pretrained(model_path)
    needed = training_bytes(
        model_config, micro_batch_tokens=micro_batch_tokens,
        world=accelerator.num_processes, zero3=zero3,
        trainable_share=0.01 if lora else 1.0, gradient_checkpointing=gradient_checkpointing,
        logit_elements=min(logit_chunk_elements,
                           micro_batch_tokens * getattr(model_config, "vocab_size", 0)),
        activation_bytes=2 if accelerator.mixed_precision == "bf16" else 4)
    available = available_bytes(accelerator.device)
    if accelerator.device.type != "cuda":
        # The processes of this machine share its memory (2 ranks of ZeRO-3 on CPU).
        available //= int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return check_fits(needed, available, what=what)


def available_bytes(device) -> int:
    """Memory a new allocation can have now: free GPU memory on a GPU, else the system's
    available memory (what the kernel can give without swapping or killing)."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def check_fits(needed: int, available: int, *, what: str) -> str:
    """Refuses a run whose estimate exceeds what is available; else the plan's memory line."""
    line = f"needs about {needed / GIB:.1f} GiB of {available / GIB:.1f} GiB available"
    if needed > available:
        raise ConfigError(
            f"{what} {line}: it would be killed for lack of memory. Lower --batch-size or "
            "--max-length, add --gradient-checkpointing or --lora-r, or free memory")
    return line


PAYS_FROM_WEIGHTS = 50_000_000
"""From this many weights (SmolLM2-135M has 135M), bf16 autocast and gradient checkpointing
are the defaults: activations then dominate memory and bf16 matrix units pay for the casts.
Below it (the test suite's tiny models) fp32 without checkpointing is as fast and exact."""


def cpu_has_bf16() -> bool:
    """True when this CPU computes bf16 natively (AMX or AVX-512 BF16); elsewhere bf16 autocast
    would emulate it, slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("amx_bf16", "avx512_bf16"))


def efficient_defaults(config, model_path: str):
    """``config`` with ``bf16`` and ``gradient_checkpointing`` left at None decided for the
    model: both on for a model of ``PAYS_FROM_WEIGHTS`` or more (bf16 where the GPU or CPU
    computes it natively), off below. A value set by hand, or a launcher's mixed-precision
    setting, is kept."""
    import dataclasses

    import torch

    from training.models import model_parameters

    large = model_parameters(model_path) >= PAYS_FROM_WEIGHTS
    changes = {}
    if getattr(config, "gradient_checkpointing", False) is None:
        changes["gradient_checkpointing"] = large
    if config.bf16 is None and not os.environ.get("ACCELERATE_MIXED_PRECISION"):
        changes["bf16"] = large and (torch.cuda.is_available() or cpu_has_bf16())
    return dataclasses.replace(config, **changes) if changes else config


def peak_bytes(device=None) -> int:
    """This process's peak so far: the CUDA allocator's on a GPU, else peak resident memory."""
    import torch

    if device is not None and getattr(device, "type", str(device)) == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def peak_text(peak: int) -> str:
    return f"peak memory {peak / GIB:.1f} GiB"
