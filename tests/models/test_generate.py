"""KV-cache decoding and generation: the cached path equals full recomputation, sampling is
reproducible, the context limit is enforced, and the training forward is untouched."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from phmscale.models import build_model
from phmscale.models.generate import decode_bytes, encode_bytes, generate, next_token
from phmscale.models.transformer import PHMTransformer
from phmscale.spec import TransformerSpec

SEQ_LEN = 64
# (attention, value_output): the four variants, collapsed_qk_vo also without Wvo.
VARIANTS = [("standard", "matrix"), ("collapsed_qk", "matrix"), ("collapsed_qk_vo", "matrix"),
            ("collapsed_qk_vo", "none"), ("symmetric", "matrix")]
# real, and phm at n = 2 / 4. dim 32 at n = 2 and 64 at n = 4 make one decode row take the PHM
# layers' structured path (1·n·16 <= in_features), so the two layer paths are compared too.
ALGEBRAS = [("real", None, 32), ("phm", 2, 32), ("phm", 4, 64)]


def lm_spec(attention: str = "standard", value_output: str = "matrix", algebra: str = "phm",
            n: int | None = 2, dim: int = 32, **kw: Any) -> TransformerSpec:
    base: dict[str, Any] = dict(kind="phm_transformer", task="causal_lm", algebra=algebra, n=n,
                                attention=attention, value_output=value_output, dim=dim,
                                depth=2, heads=4, mlp_ratio=2, seq_len=SEQ_LEN, vocab_size=256)
    return TransformerSpec(**{**base, **kw})


def build(seed: int = 0, **kw: Any) -> PHMTransformer:
    torch.manual_seed(seed)
    model = build_model(lm_spec(**kw))
    assert isinstance(model, PHMTransformer)
    return model.eval()


def prompt(t: int = 10, b: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (b, t), generator=torch.Generator().manual_seed(seed))


CASES = [pytest.param(a, vo, alg, n, d, id=f"{a}-{vo}-{alg}{n or ''}")
         for a, vo in VARIANTS for alg, n, d in ALGEBRAS]


@pytest.mark.parametrize(("attention", "value_output", "algebra", "n", "dim"), CASES)
def test_greedy_cached_equals_recomputed(attention: str, value_output: str, algebra: str,
                                         n: int | None, dim: int) -> None:
    model = build(attention=attention, value_output=value_output, algebra=algebra, n=n, dim=dim)
    with torch.no_grad():
        # At init (std 0.02) greedy output settles into a loop of 2-5 bytes; position
        # embeddings 50x larger make it vary along the sequence (37-45 distinct bytes), so a
        # wrong position or a stale key would show as a different token.
        model.pos_embed.mul_(50)
    p = prompt(10)
    new = SEQ_LEN + 1 - 10  # up to the limit: the last token is predicted at position seq_len
    cached = generate(model, p, new, use_cache=True)
    full = generate(model, p, new, use_cache=False)
    assert cached.shape == (1, SEQ_LEN + 1)
    assert torch.equal(cached[:, :10], p)
    assert torch.equal(cached, full)
    assert cached[0, 10:].unique().numel() >= 10  # not a trivial loop


@pytest.mark.parametrize(("attention", "value_output", "algebra", "n", "dim"), CASES)
def test_cached_logits_match_last_position(attention: str, value_output: str, algebra: str,
                                           n: int | None, dim: int) -> None:
    model = build(attention=attention, value_output=value_output, algebra=algebra, n=n, dim=dim)
    seq = prompt(SEQ_LEN, b=2)
    with torch.inference_mode():
        cache = model.new_cache()
        pre = model.decode(seq[:, :8], cache)  # prefill, (B, 8, V)
        torch.testing.assert_close(pre, model(seq[:, :8]), rtol=1e-5, atol=1e-5)
        for t in range(8, SEQ_LEN):  # one token at a time at absolute position t
            step = model.decode(seq[:, t : t + 1], cache)[:, -1]  # (B, V)
            ref = model(seq[:, : t + 1])[:, -1]
            torch.testing.assert_close(step, ref, rtol=1e-5, atol=1e-5)
        assert cache.length == SEQ_LEN


@pytest.mark.parametrize(("attention", "value_output"), VARIANTS)
def test_chunked_prefill_matches_forward(attention: str, value_output: str) -> None:
    """Several tokens after a non-empty cache: the causal mask shifted by the cached length."""
    model = build(attention=attention, value_output=value_output)
    seq = prompt(30, b=2)
    with torch.inference_mode():
        cache = model.new_cache()
        chunks = [model.decode(seq[:, a:b], cache) for a, b in [(0, 7), (7, 8), (8, 19), (19, 30)]]
        torch.testing.assert_close(torch.cat(chunks, 1), model(seq), rtol=1e-5, atol=1e-5)


def test_collapsed_cache_stores_shared_keys_once() -> None:
    model = build(attention="collapsed_qk_vo", value_output="none")
    with torch.inference_mode():
        cache = model.new_cache()
        model.decode(prompt(5), cache)
    layer = cache.layers[0]
    assert layer._k is not None and layer._v is not None
    assert layer._k.shape == (1, 1, SEQ_LEN, 32)  # raw tokens, not one copy per head
    assert layer._v.shape == (1, 1, SEQ_LEN, 32)


def test_sampling_is_reproducible_with_a_seeded_generator() -> None:
    model = build()
    p = prompt(5)

    def draw(seed: int, **kw: Any) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return generate(model, p, 30, temperature=1.0, generator=g, **kw)

    a = draw(0, top_k=20)
    assert torch.equal(a, draw(0, top_k=20))
    assert not torch.equal(a, draw(1, top_k=20))  # 30 draws over ~20 tokens: never all equal
    assert torch.equal(draw(3, use_cache=False), draw(3, use_cache=False))
    # top_k = 1 leaves only the argmax: sampling reduces to greedy decoding.
    g = torch.Generator().manual_seed(0)
    assert torch.equal(generate(model, p, 30, temperature=0.7, top_k=1, generator=g),
                       generate(model, p, 30))


def test_top_k_draws_only_the_k_largest() -> None:
    logits = torch.randn(3, 256, generator=torch.Generator().manual_seed(0))
    top = logits.topk(5, dim=-1).indices  # (3, 5)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        tok = next_token(logits, temperature=2.0, top_k=5, generator=g)  # (3, 1)
        assert (tok == top).any(dim=-1).all()
    assert torch.equal(next_token(logits), logits.argmax(-1, keepdim=True))


def test_too_long_requests_are_refused() -> None:
    model = build()
    with pytest.raises(ValueError, match="seq_len=64"):
        generate(model, prompt(60), 6)  # 66 > seq_len + 1
    with pytest.raises(ValueError, match="seq_len=64"):
        generate(model, prompt(60), 6, use_cache=False)
    with pytest.raises(ValueError, match="seq_len=64"):
        generate(model, prompt(65), 0)  # the prompt alone overflows the position table
    assert generate(model, prompt(60), 5).shape == (1, 65)  # exactly at the limit
    with torch.inference_mode():
        cache = model.new_cache()
        model.decode(prompt(SEQ_LEN), cache)
        with pytest.raises(ValueError, match="seq_len=64"):
            model.decode(prompt(1), cache)
    with pytest.raises(ValueError, match="seq_len=64"):
        model(prompt(65))


def test_bad_arguments_are_refused() -> None:
    model = build()
    with pytest.raises(ValueError, match="temperature"):
        generate(model, prompt(3), 2, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        generate(model, prompt(3), 2, temperature=1.0, top_k=0)
    with pytest.raises(ValueError, match="int64"):
        generate(model, prompt(3).int(), 2)
    classifier = build_model(TransformerSpec(task="classify", dim=16, depth=1, heads=2))
    with pytest.raises(ValueError, match="causal_lm"):
        generate(classifier, torch.zeros(1, 3, dtype=torch.int64), 2)


def test_generate_restores_training_mode_and_keeps_no_graph() -> None:
    model = build().train()
    out = generate(model, prompt(4), 3)
    assert model.training
    assert not out.requires_grad and out.shape == (1, 7)
    assert torch.equal(generate(model, prompt(4), 0), prompt(4))


def test_bytes_round_trip() -> None:
    text = "héllo, wörld ∑"
    tokens = encode_bytes(text)
    assert tokens.dtype == torch.int64 and tokens.shape == (1, len(text.encode()))
    assert decode_bytes(tokens) == text
    assert decode_bytes(torch.tensor([104, 0xC3])) == "h\ufffd"  # a cut-off 2-byte character
    model = build()
    out = generate(model, encode_bytes("abc"), 5)
    assert decode_bytes(out).startswith("abc")


def _reference_forward(model: PHMTransformer, x: torch.Tensor) -> torch.Tensor:
    """The causal-LM forward written out as before the cache existed."""
    h = model.embed(x) + model.pos_embed[:, : x.shape[1]]
    for block in model.blocks:
        attn = block.attn
        q, k, v = attn.qkv(block.norm1(h))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=attn.scale)
        h = h + attn.merge(out)
        h = h + block.mlp(block.norm2(h))
    return F.linear(model.norm(h), model.embed.weight)


@pytest.mark.parametrize(("attention", "value_output"), VARIANTS)
def test_training_forward_is_unchanged(attention: str, value_output: str) -> None:
    model = build(attention=attention, value_output=value_output).train()  # dropout 0
    x = prompt(SEQ_LEN, b=2)
    out = model(x)
    assert torch.equal(out, _reference_forward(model, x))
    out.square().mean().backward()  # the graph is intact
    assert all(p.grad is not None for p in model.parameters())
