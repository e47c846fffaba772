"""Position modules: sinusoidal tables, SpeechT5 relative keys, Transformer-XL table, rotary.

Oracles: the formulas in float64, a naive relative-bias loop, and transformers' SpeechT5 /
wav2vec2-conformer position classes (offline, no weights).
"""
from __future__ import annotations

import math

import pytest
import torch

from speechssl.nn.position import (RelativePositionalEncoding, SinusoidalPositionalEmbedding, apply_rotary,
                                   rotary_tables, sinusoidal_table, transformer_xl_table)


def test_interleaved_table_is_the_vaswani_formula():
    D = 12
    pe = sinusoidal_table(torch.arange(9), D)
    ref = torch.zeros(9, D, dtype=torch.float64)
    for t in range(9):
        for k in range(D // 2):
            ref[t, 2 * k] = math.sin(t / 10000 ** (2 * k / D))
            ref[t, 2 * k + 1] = math.cos(t / 10000 ** (2 * k / D))
    torch.testing.assert_close(pe.double(), ref, atol=1e-5, rtol=0)


def test_concat_table_is_the_tensor2tensor_formula():
    D = 10
    pe = sinusoidal_table(torch.arange(7) + 2, D, layout="concat")
    half = D // 2
    ref = torch.zeros(7, D, dtype=torch.float64)
    for t in range(7):
        for k in range(half):
            w = math.exp(-k * math.log(10000) / (half - 1))
            ref[t, k], ref[t, half + k] = math.sin((t + 2) * w), math.cos((t + 2) * w)
    torch.testing.assert_close(pe.double(), ref, atol=1e-5, rtol=0)


def test_sinusoidal_matches_speecht5_classes():
    st5 = pytest.importorskip("transformers.models.speecht5.modeling_speecht5")
    torch.manual_seed(0)
    x = torch.randn(3, 20, 32)
    scaled = st5.SpeechT5ScaledPositionalEncoding(0.0, 32, 100).eval()
    ours = SinusoidalPositionalEmbedding(32, learnt_scale=True)
    with torch.no_grad():
        scaled.alpha.fill_(0.7)
        ours.alpha.fill_(0.7)
    assert torch.equal(scaled(x), x + ours(x))
    pad = torch.arange(20)[None] >= torch.tensor([20, 13, 5])[:, None]
    for D in (32, 33):  # odd D: a zero channel
        ref = st5.SpeechT5SinusoidalPositionalEmbedding(100, D, 1)(pad.long())  # positions start at padding_idx + 1
        got = SinusoidalPositionalEmbedding(D, layout="concat", offset=2)(torch.zeros(3, 20, D), pad)
        assert torch.equal(got, ref)
        assert got[pad].abs().max() == 0


def test_sinusoidal_shapes_dtype_and_errors():
    emb = SinusoidalPositionalEmbedding(8)
    assert emb(torch.zeros(2, 5, 8)).shape == (1, 5, 8)
    assert emb(torch.zeros(2, 5, 8, dtype=torch.float64)).dtype == torch.float64
    assert list(emb.state_dict()) == []
    assert list(SinusoidalPositionalEmbedding(8, learnt_scale=True).state_dict()) == ["alpha"]
    with pytest.raises(ValueError, match="even dim"):
        SinusoidalPositionalEmbedding(7)
    with pytest.raises(ValueError, match="layout"):
        SinusoidalPositionalEmbedding(8, layout="rope")
    with pytest.raises(ValueError, match=r"\(B, T, 8\)"):
        emb(torch.zeros(2, 5, 4))


@pytest.mark.parametrize("T", [3, 9, 20])
def test_relative_bias_matches_naive_loop(T):
    torch.manual_seed(0)
    K, Dh = 6, 4
    rel = RelativePositionalEncoding(Dh, K)
    q = torch.randn(2, 3, T, Dh)
    bias = rel(q)
    ref = torch.zeros(2, 3, T, T)
    for i in range(T):
        for j in range(T):
            row = min(max(i - j, -K), K - 1) + K
            ref[:, :, i, j] = (q[:, :, i] * rel.pe_k.weight[row]).sum(-1) / math.sqrt(Dh)
    torch.testing.assert_close(bias, ref, atol=1e-6, rtol=1e-6)
    idx = rel.indices(T)
    assert int(idx.min()) >= 0 and int(idx.max()) < 2 * K
    with pytest.raises(ValueError, match="queries"):
        rel(torch.randn(1, 1, T, Dh + 1))


def test_transformer_xl_table_matches_wav2vec2_conformer():
    w2vc = pytest.importorskip("transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer")
    from transformers import Wav2Vec2ConformerConfig

    cfg = Wav2Vec2ConformerConfig(hidden_size=16, num_attention_heads=2, max_source_positions=50)
    ref = w2vc.Wav2Vec2ConformerRelPositionalEmbedding(cfg)(torch.zeros(1, 11, 16))[0]
    got = transformer_xl_table(11, 16)
    assert got.shape == (21, 16)
    assert torch.equal(got, ref)
    torch.testing.assert_close(got[10], sinusoidal_table(torch.tensor(0), 16))  # distance 0 in the middle


def test_rotary_matches_wav2vec2_conformer_and_is_relative():
    w2vc = pytest.importorskip("transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer")
    from transformers import Wav2Vec2ConformerConfig

    cfg = Wav2Vec2ConformerConfig(hidden_size=16, num_attention_heads=2, rotary_embedding_base=10000)
    ref = w2vc.Wav2Vec2ConformerRotaryPositionalEmbedding(cfg)(torch.zeros(1, 9, 16))  # (2, T, 1, 1, Dh)
    cos, sin = rotary_tables(9, 8)
    assert torch.equal(cos, ref[0, :, 0, 0]) and torch.equal(sin, ref[1, :, 0, 0])
    # q·k after rotation depends on the offset only, and rotation keeps norms
    torch.manual_seed(0)
    q, k = torch.randn(8), torch.randn(8)
    cos, sin = rotary_tables(12, 8, dtype=torch.float64)
    rot = lambda v, t: apply_rotary(v.double().expand(1, 12, 1, 8), cos, sin)[0, t, 0]  # noqa: E731
    torch.testing.assert_close((rot(q, 5) * rot(k, 2)).sum(), (rot(q, 9) * rot(k, 6)).sum())
    torch.testing.assert_close(rot(q, 7).norm(), q.double().norm())
    with pytest.raises(ValueError, match="even head width"):
        rotary_tables(4, 7)
