"""Conformer encoder against transformers' wav2vec2-conformer (random small configs, weights
copied), padding invariance, the masked BatchNorm, names and errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from speechssl.nn.conformer import ConformerConvModule, ConformerEncoder, MaskedBatchNorm1d

HF_POSITION = {"rel_pos": "relative", "rotary": "rotary", "none": None}


def _hf_pair(position: str, layers: int = 2, kernel: int = 7):
    w2vc = pytest.importorskip("transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer")
    from transformers import Wav2Vec2ConformerConfig

    torch.manual_seed(0)
    cfg = Wav2Vec2ConformerConfig(
        hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=48, hidden_act="swish",
        hidden_dropout=0.0, activation_dropout=0.0, attention_dropout=0.0, conformer_conv_dropout=0.0, layerdrop=0.0,
        conv_depthwise_kernel_size=kernel, position_embeddings_type=HF_POSITION[position], max_source_positions=64,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    cfg._attn_implementation = "eager"
    hf = w2vc.Wav2Vec2ConformerEncoder(cfg).eval()
    with torch.no_grad():  # random everything, including BatchNorm running statistics
        for p in hf.parameters():
            p.normal_(0, 0.3) if p.dim() > 1 else p.normal_(0.1, 0.3)
        for layer in hf.layers:
            layer.conv_module.batch_norm.running_mean.normal_()
            layer.conv_module.batch_norm.running_var.uniform_(0.5, 2.0)
    ours = ConformerEncoder(32, 48, layers, 4, depthwise_kernel_size=kernel, position=position, dropout=0.0).eval()
    sd = {"layer_norm.weight": hf.layer_norm.weight, "layer_norm.bias": hf.layer_norm.bias}
    for i, layer in enumerate(hf.layers):
        mods = {"ffn1.layer_norm": layer.ffn1_layer_norm, "ffn1.w_1": layer.ffn1.intermediate_dense,
                "ffn1.w_2": layer.ffn1.output_dense, "ffn2.layer_norm": layer.ffn2_layer_norm,
                "ffn2.w_1": layer.ffn2.intermediate_dense, "ffn2.w_2": layer.ffn2.output_dense,
                "self_attn_layer_norm": layer.self_attn_layer_norm, "final_layer_norm": layer.final_layer_norm}
        for n in ("q", "k", "v", "out", "pos"):
            if hasattr(layer.self_attn, f"linear_{n}"):
                mods[f"self_attn.linear_{n}"] = getattr(layer.self_attn, f"linear_{n}")
        for n in ("layer_norm", "pointwise_conv1", "depthwise_conv", "batch_norm", "pointwise_conv2"):
            mods[f"conv_module.{n}"] = getattr(layer.conv_module, n)
        for name, mod in mods.items():
            for key, value in mod.state_dict().items():
                sd[f"layers.{i}.{name}.{key}"] = value
        if hasattr(layer.self_attn, "pos_bias_u"):
            sd[f"layers.{i}.self_attn.pos_bias_u"] = layer.self_attn.pos_bias_u
            sd[f"layers.{i}.self_attn.pos_bias_v"] = layer.self_attn.pos_bias_v
    ours.load_state_dict(sd, strict=True)
    return ours, hf


@pytest.mark.parametrize("position", ["rel_pos", "rotary", "none"])
def test_matches_wav2vec2_conformer_encoder(position):
    ours, hf = _hf_pair(position)
    x = torch.randn(3, 20, 32)
    with torch.no_grad():
        ref = hf(x.clone()).last_hidden_state
        got = ours(x)
    assert len(got) == 3
    assert (got[-1] - ref).abs().max() < 1e-5
    # every layer: run transformers' layers one by one with its own position tables
    with torch.no_grad():
        pos = hf.embed_positions(x) if hf.embed_positions is not None else None
        h = x
        for i, layer in enumerate(hf.layers[:-1]):
            h = layer(h, relative_position_embeddings=pos)
            assert (got[i + 1] - h).abs().max() < 1e-5


@pytest.mark.parametrize("position", ["rel_pos", "rotary"])
def test_padded_batch_matches_wav2vec2_conformer_run_alone(position):
    """transformers lets the depthwise conv read padded frames (a padded row differs from the
    sequence alone); ours does not, so each padded row equals transformers on that sequence alone."""
    ours, hf = _hf_pair(position)
    x = torch.randn(3, 20, 32)
    lengths = torch.tensor([20, 13, 5])
    with torch.no_grad():
        got = ours(x, lengths)[-1]
        for b, n in enumerate(lengths.tolist()):
            alone = hf(x[b : b + 1, :n].clone()).last_hidden_state[0]
            assert (got[b, :n] - alone).abs().max() < 1e-5
            assert got[b, n:].abs().sum() == 0


@pytest.mark.parametrize("position", ["rel_pos", "rotary", "none"])
@pytest.mark.parametrize("conv_norm", ["batch_norm", "layer_norm"])
@pytest.mark.parametrize("layer_norm_first", [True, False])
def test_padding_invariance(position, conv_norm, layer_norm_first):
    torch.manual_seed(0)
    enc = ConformerEncoder(16, 24, 2, 2, depthwise_kernel_size=5, position=position, conv_norm=conv_norm,
                           layer_norm_first=layer_norm_first, dropout=0.0).eval()
    xs = [torch.randn(n, 16) for n in (12, 7, 1)]
    x = torch.full((3, 12, 16), 4.0)  # garbage in the padding
    for i, t in enumerate(xs):
        x[i, : len(t)] = t
    with torch.no_grad():
        batched = enc(x, torch.tensor([12, 7, 1]))
        for i, t in enumerate(xs):
            for b, s in zip(batched, enc(t[None])):
                torch.testing.assert_close(b[i, : len(t)], s[0], atol=1e-5, rtol=1e-5)
                assert b[i, len(t):].abs().sum() == 0


def test_conv_module_does_not_read_padding():
    torch.manual_seed(0)
    conv = ConformerConvModule(8, 5).eval()
    x = torch.randn(2, 9, 8)
    pad = torch.zeros(2, 9, dtype=torch.bool)
    pad[1, 6:] = True
    x2 = x.clone()
    x2[1, 6:] = 100.0
    with torch.no_grad():
        torch.testing.assert_close(conv(x, pad)[~pad], conv(x2, pad)[~pad])
        alone = conv(x[1:, :6])
        torch.testing.assert_close(conv(x, pad)[1, :6], alone[0], atol=1e-6, rtol=1e-6)


def test_masked_batch_norm_uses_valid_frames_only():
    torch.manual_seed(0)
    ours, ref = MaskedBatchNorm1d(4), nn.BatchNorm1d(4)
    with torch.no_grad():
        for bn in (ours, ref):
            bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
            bn.bias.copy_(torch.tensor([0.0, 0.1, -0.2, 0.3]))
    x = torch.randn(2, 4, 7)
    lengths = torch.tensor([7, 3])
    pad = torch.arange(7)[None] >= lengths[:, None]
    x[1, :, 3:] = 50.0
    valid = torch.cat([x[0], x[1, :, :3]], dim=1)[None]  # (1, 4, 10): the valid frames only
    for _ in range(2):
        y = ours(x, pad)
        r = ref(valid)
        torch.testing.assert_close(torch.cat([y[0], y[1, :, :3]], dim=1)[None], r, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    assert int(ours.num_batches_tracked) == 2
    ours.eval()
    ref.eval()
    torch.testing.assert_close(ours(x, pad), ref(x))  # eval: exactly BatchNorm1d
    assert set(ours.state_dict()) == set(ref.state_dict())


def test_fairseq_parameter_names():
    keys = set(ConformerEncoder(16, 24, 1, 2, depthwise_kernel_size=3).state_dict())
    for k in ("layers.0.ffn1.layer_norm.weight", "layers.0.ffn1.w_1.weight", "layers.0.ffn2.w_2.bias",
              "layers.0.self_attn_layer_norm.weight", "layers.0.self_attn.linear_q.weight",
              "layers.0.self_attn.linear_pos.weight", "layers.0.self_attn.pos_bias_u",
              "layers.0.self_attn.pos_bias_v", "layers.0.conv_module.layer_norm.weight",
              "layers.0.conv_module.pointwise_conv1.weight", "layers.0.conv_module.depthwise_conv.weight",
              "layers.0.conv_module.batch_norm.running_var", "layers.0.conv_module.pointwise_conv2.weight",
              "layers.0.final_layer_norm.weight", "layer_norm.weight"):
        assert k in keys, k
    ln = set(ConformerEncoder(16, 24, 1, 2, depthwise_kernel_size=3, position="rotary", conv_norm="layer_norm")
             .state_dict())
    assert "layers.0.conv_module.depthwise_layer_norm.weight" in ln
    assert not any("batch_norm" in k or "linear_pos" in k or "pos_bias" in k for k in ln)


def test_layer_drop_and_errors():
    torch.manual_seed(0)
    enc = ConformerEncoder(16, 24, 3, 2, depthwise_kernel_size=3, dropout=0.0, layerdrop=0.999,
                           layer_norm_first=False)
    x = torch.randn(2, 6, 16)
    states = enc.train()(x)
    for h in states[1:]:
        torch.testing.assert_close(h, states[0])
    enc.eval()
    assert len(enc(x, output_layer=2)) == 3
    with pytest.raises(ValueError, match="output_layer"):
        enc(x, output_layer=4)
    with pytest.raises(ValueError, match=r"\(B, T, 16\)"):
        enc(torch.randn(2, 6, 8))
    with pytest.raises(ValueError, match="odd"):
        ConformerEncoder(16, 24, 1, 2, depthwise_kernel_size=4)
    with pytest.raises(ValueError, match="position"):
        ConformerEncoder(16, 24, 1, 2, position="relative")
    with pytest.raises(ValueError, match="layerdrop"):
        ConformerEncoder(16, 24, 1, 2, layerdrop=1.0)
