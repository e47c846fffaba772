"""The w2v-BERT 2.0 switches of speechssl.nn.conformer: Shaw relative keys, causal depthwise conv,
no encoder LayerNorm (the transformers parity is in tests/upstream/w2v_bert/test_hf.py)."""
from __future__ import annotations

import torch

from speechssl.nn.conformer import ConformerConvModule, ConformerEncoder, ConformerSelfAttention


def test_relative_key_bias_equals_an_explicit_loop() -> None:
    torch.manual_seed(0)
    attn = ConformerSelfAttention(16, 2, position="relative_key", left_max_distance=3, right_max_distance=2)
    nn_ = torch.nn
    nn_.init.normal_(attn.distance_embedding.weight)
    q = torch.randn(2, 2, 7, 8)
    got = attn._relative_key_bias(q)
    E = attn.distance_embedding.weight
    want = torch.empty(2, 2, 7, 7)
    for i in range(7):
        for j in range(7):
            d = min(max(j - i, -3), 2) + 3
            want[:, :, i, j] = (q[:, :, i] * E[d]).sum(-1) / 8 ** 0.5
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    assert attn.distance_embedding.weight.shape == (6, 8)


def test_causal_conv_reads_only_the_past() -> None:
    torch.manual_seed(0)
    conv = ConformerConvModule(8, 5, norm="layer_norm", causal=True).eval()
    x = torch.randn(1, 12, 8)
    y = conv(x)
    x2 = x.clone()
    x2[:, 7:] += torch.randn(1, 5, 8)  # change the future of frame 6
    y2 = conv(x2)
    torch.testing.assert_close(y[:, :7], y2[:, :7])
    assert not torch.allclose(y[:, 7:], y2[:, 7:])


def test_w2v_bert_layout_keys_and_padding_invariance() -> None:
    torch.manual_seed(0)
    enc = ConformerEncoder(16, 32, 2, 2, depthwise_kernel_size=5, position="relative_key", conv_norm="layer_norm",
                           conv_causal=True, encoder_layer_norm=False, left_max_distance=4,
                           right_max_distance=2).eval()
    keys = list(enc.state_dict())
    assert "layers.0.self_attn.distance_embedding.weight" in keys
    assert not any(k.startswith("layer_norm.") for k in keys)
    x = torch.randn(2, 10, 16)
    lengths = torch.tensor([10, 6])
    with torch.no_grad():
        hidden = enc(x, lengths)
        alone = enc(x[1:, :6], torch.tensor([6]))
    assert len(hidden) == 3
    for a, b in zip(alone, hidden):
        torch.testing.assert_close(a[0], b[1, :6], atol=1e-6, rtol=1e-6)
        assert float(b[1, 6:].abs().max()) == 0.0
    # without the encoder LayerNorm the last state is the last layer's output itself
    with torch.no_grad():
        pad = torch.zeros(2, 10, dtype=torch.bool)
        pad[1, 6:] = True
        last = enc.layers[1](enc.layers[0](x.masked_fill(pad[..., None], 0.0), pad, None), pad, None)
    torch.testing.assert_close(hidden[-1][0], last[0])
