"""One sampling interface, two backends: vLLM and transformers ``generate``.

A ``Sampler`` turns chat-formatted prompt strings into ``k`` samples each, and takes a trainer's
updated weights in place (``sync_weights``) so online RL samples from the current policy. vLLM is
imported only when its backend is built, so importing this module stays light.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch

BACKENDS = ("auto", "vllm", "transformers")


class BackendError(Exception):
    """A backend that is unknown or cannot run here, with a message meant for the user."""


@dataclass(frozen=True)
class SamplingConfig:
    k: int = 4
    """Samples per prompt."""
    temperature: float = 0.8
    """Softmax temperature; 0 means greedy."""
    top_p: float = 0.9
    """Nucleus sampling mass."""
    max_new_tokens: int = 256
    """Upper bound on each sample's length in tokens."""
    seed: int = 0
    """Seeds the sampler once, so a rerun with the same settings draws the same samples."""

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")


@dataclass(frozen=True)
class Sample:
    text: str
    token_count: int
    """Generated tokens, the end-of-sequence token included when one was produced."""
    finish_reason: str
    """``stop`` when the model ended the reply, ``length`` when max_new_tokens cut it."""


class Sampler(Protocol):
    name: str
    """The backend's name as stored with a generation run."""

    def generate(self, prompts: Sequence[str], config: SamplingConfig) -> list[list[Sample]]:
        """``config.k`` samples for each chat-formatted prompt, in prompt order."""
        ...

    def sync_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Loads new weights into the sampling model in place; later ``generate`` calls use them.

        ``weights`` are ``(name, tensor)`` pairs named as in the Hugging Face causal LM that
        the sampler was built on (``model.named_parameters()`` or ``state_dict().items()`` of
        its ``AutoModelForCausalLM``: ``model.embed_tokens.weight``,
        ``model.layers.0.self_attn.q_proj.weight``, ..., ``lm_head.weight``). Shapes must match;
        dtype and device are converted. The vLLM backend needs every parameter (it fuses q/k/v
        and gate/up into single layers and reloads whole layers); transformers also takes a
        subset. An unknown name, a wrong shape or a missing parameter raises ``ValueError``
        before anything is loaded.
        """
        ...

    def close(self) -> None:
        """Releases the engine's processes and memory."""
        ...


def _names(names: Iterable[str]) -> str:
    names = sorted(names)
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _check_weights(weights: Iterable[tuple[str, torch.Tensor]],
                   expected: dict[str, tuple[int, ...]],
                   required: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """``weights`` as a dict, after checking names and shapes against ``expected``."""
    named = dict(weights)
    unknown = set(named) - set(expected)
    if unknown:
        raise ValueError(
            f"not parameters of the sampling model: {_names(unknown)} (expected Hugging Face "
            "names such as 'model.layers.0.self_attn.q_proj.weight')"
        )
    missing = set(required) - set(named)
    if missing:
        raise ValueError(f"this sampler takes every parameter at once; missing: {_names(missing)}")
    for name, tensor in named.items():
        if tuple(tensor.shape) != expected[name]:
            raise ValueError(f"weight {name!r} has shape {tuple(tensor.shape)}, the sampling "
                             f"model expects {expected[name]}")
    return named


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def pick_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "vllm" if vllm_available() else "transformers"
    if backend == "vllm" and not vllm_available():
        raise BackendError(
            "the vllm backend is not installed: pip install 'rankloop[cpu]' (CPU) or "
            "'rankloop[gpu]' (CUDA), or use --backend transformers"
        )
    return backend


def make_sampler(backend: str, model: str, config: SamplingConfig, **options) -> Sampler:
    """Builds the chosen backend on ``model`` (a resolved folder or Hub id)."""
    backend = pick_backend(backend)
    if backend == "vllm":
        return VLLMSampler(model, seed=config.seed, **options)
    return TransformersSampler(model, seed=config.seed, **options)


# ---------------------------------------------------------------------------------------------

class TransformersSampler:
    """Batched ``generate`` with left padding; prompts are grouped by length to waste less."""

    name = "transformers"

    def __init__(self, model: str, *, seed: int = 0, batch_size: int = 8, device: str | None = None,
                 dtype=None):
        import torch

        from training.models import load_causal_lm, load_tokenizer

        self.tokenizer = load_tokenizer(model, padding_side="left")
        self.model = load_causal_lm(model, dtype=dtype, device=device).eval()
        self.batch_size = batch_size
        self.generator_seed = seed
        self.generate_options: dict = {}
        self.no_grad = torch.inference_mode
        torch.manual_seed(seed)

    @classmethod
    def from_model(cls, model, tokenizer, *, batch_size: int = 8,
                   generate_options: dict | None = None) -> TransformersSampler:
        """A sampler on a model a trainer is updating: it always samples the current weights.
        The global RNG is left as it is (a resumed trainer has just restored it)."""
        import torch

        sampler = cls.__new__(cls)
        sampler.tokenizer, sampler.model, sampler.batch_size = tokenizer, model, batch_size
        sampler.generate_options = dict(generate_options or {})
        # no_grad, not inference_mode: tensors that ZeRO-3 gathers while sampling may be kept
        # and later take part in a backward pass.
        sampler.no_grad = torch.no_grad
        return sampler

    def generate(self, prompts: Sequence[str], config: SamplingConfig) -> list[list[Sample]]:
        import torch

        results: list[list[Sample]] = [[] for _ in prompts]
        # Sort by length so each batch pads little; results go back in the caller's order.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        eos_ids = self._eos_ids()
        for start in range(0, len(order), self.batch_size):
            batch_idx = order[start:start + self.batch_size]
            enc = self.tokenizer(
                [prompts[i] for i in batch_idx], return_tensors="pt", padding=True,
                add_special_tokens=False,
            ).to(self.model.device)
            # Each prompt row repeated k times (instead of num_return_sequences, which greedy
            # decoding refuses): rows i*k .. i*k+k-1 belong to prompt i.
            enc = {name: t.repeat_interleave(config.k, dim=0) for name, t in enc.items()}
            sampling = config.temperature > 0
            with self.no_grad():
                out = self.model.generate(
                    **enc,
                    **self.generate_options,
                    do_sample=sampling,
                    temperature=config.temperature if sampling else None,
                    top_p=config.top_p if sampling else None,
                    top_k=None,
                    max_new_tokens=config.max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=sorted(eos_ids),
                )
            new_tokens = out[:, enc["input_ids"].shape[1]:].tolist()
            for row, ids in enumerate(new_tokens):
                results[batch_idx[row // config.k]].append(self._to_sample(ids, eos_ids))
        return results

    def _eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def _to_sample(self, ids: list[int], eos_ids: set[int]) -> Sample:
        # generate() pads finished rows with pad_token_id (often == eos): cut at the first EOS.
        end = next((i for i, t in enumerate(ids) if t in eos_ids), None)
        if end is None:
            return Sample(self.tokenizer.decode(ids, skip_special_tokens=True), len(ids), "length")
        return Sample(
            self.tokenizer.decode(ids[:end], skip_special_tokens=True), end + 1, "stop"
        )

    def sync_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """See ``Sampler.sync_weights``."""
        import torch

        # state_dict names include tied weights (lm_head.weight) that named_parameters() hides.
        targets = self.model.state_dict(keep_vars=True)
        named = _check_weights(weights, {n: tuple(t.shape) for n, t in targets.items()})
        with torch.no_grad():
            for name, tensor in named.items():
                targets[name].copy_(tensor.detach().to(device=targets[name].device,
                                                       dtype=targets[name].dtype))

    def close(self) -> None:
        self.model = None


class VLLMWeightSyncExtension:
    """Mixed into vLLM's worker class (``worker_extension_cls``) so the engine can take weights.

    Runs in the worker process, reached by name through ``LLM.collective_rpc``, so no pickled
    callable (``VLLM_ALLOW_INSECURE_SERIALIZATION``) is needed.
    """

    def rankloop_load_weights(self, path: str) -> None:
        import torch

        weights = torch.load(path, weights_only=True, mmap=True)
        # reload_weights (not model.load_weights) re-runs each layer's post-load processing:
        # on CPU the linear layers compute from a packed copy made when weights were loaded.
        self.reload_weights(weights_iterator=list(weights.items()))


class VLLMSampler:
    """A vLLM engine, started once and reused for every ``generate`` call."""

    name = "vllm"

    def __init__(self, model: str, *, seed: int = 0, gpu_memory_utilization: float | None = None,
                 max_model_len: int | None = 4096, dtype: str | None = None, **engine_options):
        import torch
        from vllm import LLM

        on_gpu = torch.cuda.is_available()
        if not on_gpu and (os.cpu_count() or 1) <= 4:
            # vLLM-CPU keeps a core for its front end by default; on a small machine that halves
            # the compute threads (measured on 2 cores: 105 -> 200 tokens/s with none reserved).
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        if gpu_memory_utilization is None:
            # On CPU vLLM reserves this fraction of RAM for its KV cache.
            gpu_memory_utilization = 0.9 if on_gpu else 0.3
        engine_options.setdefault("worker_extension_cls",
                                  f"{__name__}.{VLLMWeightSyncExtension.__qualname__}")
        self._hf_param_info: tuple[dict, set[str], dict[str, str]] | None = None
        self.llm = LLM(
            model=model,
            seed=seed,  # per-request seeds fail on CPU; the engine seed makes runs repeatable
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            dtype=dtype or ("bfloat16" if on_gpu else "float32"),
            **engine_options,
        )

    def generate(self, prompts: Sequence[str], config: SamplingConfig) -> list[list[Sample]]:
        from vllm import SamplingParams

        params = SamplingParams(
            n=config.k,
            temperature=config.temperature,
            top_p=config.top_p,
            max_tokens=config.max_new_tokens,
        )
        # Token ids, not strings: the chat template already holds any BOS token, and the
        # transformers backend encodes the same way, so both see identical inputs.
        tokenizer = self.llm.get_tokenizer()
        requests = [
            {"prompt_token_ids": tokenizer(p, add_special_tokens=False)["input_ids"]}
            for p in prompts
        ]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return [
            [
                Sample(c.text, len(c.token_ids), "stop" if c.finish_reason == "stop" else "length")
                for c in sorted(out.outputs, key=lambda c: c.index)
            ]
            for out in outputs
        ]

    def sync_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """See ``Sampler.sync_weights``.

        The engine's worker runs in another process on this machine; the tensors reach it as a
        file in shared memory (``/dev/shm`` when it has room). Passing them inside the RPC
        itself took 4-6 s for 540 MB on CPU against about 0.1 s for the file.
        """
        import torch

        shapes, required, aliases = self._hf_params()
        named = {n: t.detach().cpu() for n, t in _check_weights(weights, shapes, required).items()}
        # A tied alias is loaded under its own name too: vLLM-CPU packs lm_head's copy of the
        # tied embedding when it loads lm_head.weight, and would keep computing logits from
        # the old one otherwise.
        for alias, source in aliases.items():
            named.setdefault(alias, named[source])
        size = sum(t.nbytes for t in named.values())
        shm = "/dev/shm"
        folder = shm if os.path.isdir(shm) and shutil.disk_usage(shm).free > 2 * size else None
        with tempfile.TemporaryDirectory(prefix="rankloop-weights-", dir=folder) as tmp:
            path = os.path.join(tmp, "weights.pt")
            torch.save(named, path)
            self.llm.collective_rpc("rankloop_load_weights", args=(path,))
        # Cached KV blocks were computed with the old weights.
        if self.llm.llm_engine.vllm_config.cache_config.enable_prefix_caching:
            if not self.llm.reset_prefix_cache():
                raise RuntimeError("vLLM kept its prefix cache after a weight sync; "
                                   "no request may run during sync_weights")

    def _hf_params(self) -> tuple[dict[str, tuple[int, ...]], set[str], dict[str, str]]:
        """The Hugging Face model's tensor shapes by name, the names a sync must cover, and
        tied aliases (``lm_head.weight``) with the parameter each one names.

        Built on the meta device (no memory). Checked here because vLLM's loaders skip some
        names they do not know, and a load that fails or covers part of a fused layer leaves
        the engine's model partly reloaded.
        """
        if self._hf_param_info is None:
            import torch
            from transformers import AutoModelForCausalLM

            with torch.device("meta"):
                skeleton = AutoModelForCausalLM.from_config(
                    self.llm.llm_engine.model_config.hf_config)
            tensors = skeleton.state_dict(keep_vars=True)
            params = {id(p): n for n, p in skeleton.named_parameters()}
            self._hf_param_info = (
                {n: tuple(t.shape) for n, t in tensors.items()},
                set(params.values()),
                {n: params[id(t)] for n, t in tensors.items()
                 if id(t) in params and params[id(t)] != n},
            )
        return self._hf_param_info

    def close(self) -> None:
        engine = getattr(self, "llm", None)
        self.llm = None
        if engine is not None:
            shutdown = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
            if shutdown is not None and hasattr(shutdown, "shutdown"):
                shutdown.shutdown()
            del engine
