"""Log-probabilities of response tokens under a causal LM.

A sequence is prompt tokens followed by response tokens. ``pack`` pads a list of them into a
``TokenBatch`` (right or left padding, dynamic width) whose ``response_mask`` marks the response
tokens; position ids count real tokens only, so left padding gives the same log-probs as right
padding. Logits are divided by the sampling temperature before the softmax, so the log-probs
are those of the distribution the responses were sampled from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


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


def sequence_logprobs(model, batch: TokenBatch, temperature: float = 1.0) -> torch.Tensor:
    """``[N]`` summed log-probs of each sequence's response tokens: one forward pass, with
    logits over the response window only (none over the prompts, which nothing reads)."""
    logits = forward(model, batch, logits_to_keep=response_window(batch)).logits
    logp, mask = shifted_logprobs(logits, batch, temperature)
    return (logp * mask).sum(-1)
