"""Log-probabilities of response tokens under a causal LM.

A sequence is prompt tokens followed by response tokens. ``pack`` pads a list of them into a
``TokenBatch`` (right or left padding, dynamic width) whose ``response_mask`` marks the response
tokens; position ids count real tokens only, so left padding gives the same log-probs as right
padding. Logits are divided by the sampling temperature before the softmax, so the log-probs
are those of the distribution the responses were sampled from.

``sequence_logprobs`` never holds a batch's logits: it takes the hidden states the model feeds
its LM head, keeps those that predict response tokens, and runs the head over them a chunk at a
time, each chunk recomputed in the backward pass rather than kept. Logits are what fills memory
at realistic reply lengths (16 replies of 300 tokens over a 49k vocabulary are 0.9 GB in fp32,
several times over once the softmax and its gradient are counted).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint


@dataclass
class TokenBatch:
    """N prompt+response sequences padded to the longest of them.

    input_ids, attention_mask, position_ids, response_mask: ``[N, T]`` (long; the mask 1 on
    response tokens, 0 on prompt tokens and padding).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    response_mask: torch.Tensor

    @property
    def num_sequences(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_tokens(self) -> int:
        """Real (non-padding) tokens."""
        return int(self.attention_mask.sum())

    def to(self, device) -> TokenBatch:
        return TokenBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask,
                                                   self.position_ids, self.response_mask)))


def pack(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_token_id: int,
         *, side: str = "right", width: int | None = None) -> TokenBatch:
    """Pads prompt+response sequences to the longest (or to ``width``, for fixed padding)."""
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be left or right, not {side!r}")
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
    width = width or max(lengths)
    n = len(lengths)
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    position_ids = torch.zeros((n, width), dtype=torch.long)
    response_mask = torch.zeros((n, width), dtype=torch.long)
    for row, (prompt, response) in enumerate(zip(prompts, responses)):
        length = lengths[row]
        start = 0 if side == "right" else width - length
        input_ids[row, start:start + length] = torch.tensor(list(prompt) + list(response))
        attention_mask[row, start:start + length] = 1
        position_ids[row, start:start + length] = torch.arange(length)
        response_mask[row, start + len(prompt):start + length] = 1
    return TokenBatch(input_ids, attention_mask, position_ids, response_mask)


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor,
                   temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature) at ``labels``: logits ``[N, L, V]``, labels ``[N, L]``
    → ``[N, L]`` float32. Uses logsumexp instead of a full log-softmax to save memory."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    picked = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def shifted_logprobs(logits: torch.Tensor, batch: TokenBatch,
                     temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of each next token and the mask of response tokens among them.

    logits ``[N, T, V]`` from a forward over ``batch``; returns (logp, mask), both
    ``[N, T−1]``: entry t is log π(input_ids[t+1] | input_ids[..t]), kept where token t+1 is a
    response token. Logits of only the last L positions (``logits_to_keep=L``) give the last
    L−1 entries: ``[N, L−1]``."""
    offset = batch.input_ids.shape[1] - logits.shape[1]
    logp = token_logprobs(logits[:, :-1], batch.input_ids[:, offset + 1:], temperature)
    mask = batch.response_mask[:, offset + 1:].to(logp.dtype)
    return logp * mask, mask


def response_window(batch: TokenBatch) -> int:
    """How many final positions hold every row's response logits (the first response token is
    predicted from the last prompt token): pass it as ``logits_to_keep`` to skip computing
    logits over the prompts, a large share of the work with big vocabularies."""
    first_response = batch.response_mask.argmax(-1).min().item()
    return batch.input_ids.shape[1] - max(first_response - 1, 0)


def forward(model, batch: TokenBatch, **kwargs):
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                 position_ids=batch.position_ids, use_cache=False, **kwargs)


LOGIT_CHUNK_ELEMENTS = 2**25
"""Logits computed at once by ``sequence_logprobs``: chunks of this many token × vocabulary
entries (128 MB in fp32; 682 tokens of a 49k vocabulary, 262 of a 128k one)."""

LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling",
                    "lm_head_multiplier", "output_multiplier_scale")
"""Config fields of models that change logits after the LM head (Gemma 2/3, Cohere, Granite,
Falcon-H1, ...): their log-probs come from the model's own logits."""

_HEAD_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""LM head → whether the model's logits are just that head's output (checked on first use)."""


def output_head(model) -> torch.nn.Module | None:
    """The LM head under accelerate's and DeepSpeed's wrappers (``.module``) and PEFT's; None
    when the model has none, or its config names a transform of the logits after it."""
    while isinstance(getattr(model, "module", None), torch.nn.Module):
        model = model.module
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    config = getattr(model, "config", None)
    if head is None or any(getattr(config, name, None) not in (None, 1, 1.0)
                           for name in LOGIT_TRANSFORMS):
        return None
    return head


def sequence_logprobs(model, batch: TokenBatch, temperature: float = 1.0, *,
                      chunk_tokens: int | None = None) -> torch.Tensor:
    """``[N]`` summed log-probs of each sequence's response tokens, in one forward pass.

    The LM head runs only on the hidden states that predict a response token, ``chunk_tokens``
    of them at a time (default: ``LOGIT_CHUNK_ELEMENTS`` over the vocabulary), under the
    autocast the model's forward ran in; with gradients on, each chunk's logits are recomputed
    in the backward pass instead of kept. Models without a plain LM head (``output_head``)
    take the logits of the response window from their own forward."""
    head = output_head(model)
    if head is None or _HEAD_CHECKED.get(head) is False:
        return _logprobs_from_model_logits(model, batch, temperature)
    captured: dict = {}

    def capture(module, args):
        # Keep what the model feeds its head; let the head itself compute one position, which
        # is compared with this function's own head call the first time.
        hidden = args[0]
        captured["hidden"] = hidden
        captured["autocast"] = (hidden.device.type,
                                torch.get_autocast_dtype(hidden.device.type),
                                torch.is_autocast_enabled(hidden.device.type))
        return (hidden[:, -1:], *args[1:])

    handle = head.register_forward_pre_hook(capture)
    try:
        logits = forward(model, batch, logits_to_keep=response_window(batch)).logits
    finally:
        handle.remove()
    if "hidden" not in captured:
        _HEAD_CHECKED[head] = False
        return _logprobs_from_model_logits(model, batch, temperature)
    hidden = captured["hidden"]
    device_type, dtype, enabled = captured["autocast"]
    with torch.autocast(device_type, dtype=dtype, enabled=enabled):
        if head not in _HEAD_CHECKED:
            _HEAD_CHECKED[head] = _head_gives_the_logits(head, hidden[:, -1:], logits)
            if not _HEAD_CHECKED[head]:
                return _logprobs_from_model_logits(model, batch, temperature)
        offset = batch.input_ids.shape[1] - hidden.shape[1]
        predicts_response = batch.response_mask[:, offset + 1:].bool()
        rows = predicts_response.nonzero()[:, 0]
        states = hidden[:, :-1][predicts_response]  # [M, H]: one per response token
        targets = batch.input_ids[:, offset + 1:][predicts_response]  # [M]
        # The vocabulary from the logits, not the weight: ZeRO-3 leaves a rank an empty shard.
        size = chunk_tokens or max(1, LOGIT_CHUNK_ELEMENTS // logits.shape[-1])
        recompute = torch.is_grad_enabled() and states.requires_grad
        pieces = []
        for start in range(0, max(len(states), 1), size):  # one call even when M = 0
            chunk = (head, states[start:start + size], targets[start:start + size], temperature)
            pieces.append(checkpoint(_chunk_logprobs, *chunk, use_reentrant=False)
                          if recompute else _chunk_logprobs(*chunk))
    per_token = torch.cat(pieces)
    sums = torch.zeros(batch.num_sequences, dtype=per_token.dtype, device=per_token.device)
    return sums.index_add(0, rows, per_token)


def _chunk_logprobs(head, states, targets, temperature):
    return token_logprobs(head(states), targets, temperature)


def _head_gives_the_logits(head, last_hidden, model_logits) -> bool:
    """Whether the model's logits at the last position equal the head applied to its input
    there: false for a model that transforms logits after the head in a way its config does
    not name."""
    with torch.no_grad():
        own = head(last_hidden).float()
    theirs = model_logits[:, -1:].detach().float()
    return own.shape == theirs.shape and torch.allclose(
        own, theirs, rtol=1e-3, atol=1e-3 * (1 + float(theirs.abs().max())))


def _logprobs_from_model_logits(model, batch: TokenBatch, temperature: float) -> torch.Tensor:
    logits = forward(model, batch, logits_to_keep=response_window(batch)).logits
    logp, mask = shifted_logprobs(logits, batch, temperature)
    return (logp * mask).sum(-1)
