"""Autoregressive generation from a causal-LM `PHMTransformer`, with or without a KV cache.

With the cache (`use_cache=True`) the prompt is run once (causal prefill) and every later step
feeds one token, whose query attends to the stored keys/values: a step costs O(T·d) attention
and one row through each layer instead of the whole sequence. `use_cache=False` recomputes the
full sequence every step and is the reference the cached path is tested against.

Context: the model has seq_len position embeddings and reads at most seq_len tokens. The last
new token is predicted, never read, so prompt + max_new_tokens may reach seq_len + 1 (the same
seq_len inputs → seq_len targets as a training window of seq_len + 1 bytes). Longer requests
raise ValueError; there is no sliding window, because positions past seq_len were never trained.

Byte-level LMs (vocab 256) read UTF-8 bytes: `encode_bytes` / `decode_bytes` convert.
"""

from __future__ import annotations

import torch
from torch import nn

from phmscale.models.attention import KVCache


def encode_bytes(text: str) -> torch.Tensor:
    """UTF-8 bytes of text as a (1, T) int64 prompt."""
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.int64).unsqueeze(0)


def decode_bytes(tokens: torch.Tensor) -> str:
    """Byte tokens (T,) or (1, T) back to text; invalid UTF-8 (a sampled byte sequence need not
    be valid, e.g. a multi-byte character cut off) becomes U+FFFD."""
    return bytes(tokens.reshape(-1).tolist()).decode("utf-8", errors="replace")


def next_token(
    logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The next token (B, 1) from last-position logits (B, V): argmax at temperature 0, else a
    draw from softmax(logits / temperature) over the top_k largest logits (all if None)."""
    if temperature == 0.0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1): the k-th largest
        logits = logits.masked_fill(logits < kth, float("-inf"))  # ties at the k-th stay in
    probs = torch.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator)


def _check(model: nn.Module, prompt: torch.Tensor, max_new_tokens: int, temperature: float,
           top_k: int | None) -> None:
    if getattr(model, "task", None) != "causal_lm":
        raise ValueError("generate needs a PHMTransformer with task causal_lm")
    if prompt.dim() != 2 or prompt.dtype != torch.int64 or prompt.shape[1] == 0:
        raise ValueError(f"prompt must be (B, T) int64 with T >= 1, got {tuple(prompt.shape)} "
                         f"{prompt.dtype}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    seq_len, total = model.seq_len, prompt.shape[1] + max_new_tokens
    if prompt.shape[1] > seq_len or total > seq_len + 1:
        raise ValueError(
            f"prompt of {prompt.shape[1]} + {max_new_tokens} new tokens exceeds the context: the "
            f"model reads at most seq_len={seq_len} tokens, so prompt + new <= {seq_len + 1}"
        )


def generate(
    model: nn.Module, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
    top_k: int | None = None, generator: torch.Generator | None = None, use_cache: bool = True,
) -> torch.Tensor:
    """The prompt (B, T) int64 followed by max_new_tokens generated tokens: (B, T + new).

    temperature 0 is greedy (deterministic); otherwise tokens are drawn from
    softmax(logits / temperature) restricted to the top_k logits, with `generator` for
    reproducible draws. Runs in eval mode under inference_mode (the PHM layers' cached-weight /
    few-row decode path) and restores the model's training mode afterwards.
    """
    _check(model, prompt, max_new_tokens, temperature, top_k)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return _generate(model, prompt, max_new_tokens, temperature, top_k, generator,
                             use_cache)
    finally:
        model.train(was_training)


def _generate(
    model: nn.Module, prompt: torch.Tensor, max_new_tokens: int, temperature: float,
    top_k: int | None, generator: torch.Generator | None, use_cache: bool,
) -> torch.Tensor:
    tokens = prompt
    if max_new_tokens == 0:
        return tokens.clone()
    cache: KVCache | None = model.new_cache() if use_cache else None
    logits = model.decode(prompt, cache) if cache is not None else model(prompt)  # (B, T, V)
    for step in range(max_new_tokens):
        new = next_token(logits[:, -1], temperature, top_k, generator)  # (B, 1)
        tokens = torch.cat([tokens, new], dim=1)
        if step == max_new_tokens - 1:
            break  # the last token is predicted, never read: it may sit at position seq_len
        logits = model.decode(new, cache) if cache is not None else model(tokens)
    return tokens
