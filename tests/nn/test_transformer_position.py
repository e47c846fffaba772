"""TransformerEncoder with an injected position module: conv (default, unchanged), sinusoidal,
relative (against transformers' SpeechT5Encoder), none, and combinations."""
from __future__ import annotations

import pytest
import torch

from speechssl.nn.transformer import TransformerEncoder

SMALL = dict(dim=32, ffn_dim=48, num_layers=2, num_heads=4, dropout=0.0, attention_dropout=0.0,
             conv_pos=8, conv_pos_groups=4)
KINDS = ["conv", "sinusoidal", "relative", "none", ("conv", "sinusoidal", "relative")]


def _speecht5_pair(layers: int = 2, max_rel: int = 6):
    st5 = pytest.importorskip("transformers.models.speecht5.modeling_speecht5")
    from transformers import SpeechT5Config

    torch.manual_seed(0)
    cfg = SpeechT5Config(hidden_size=32, encoder_layers=layers, encoder_attention_heads=4, encoder_ffn_dim=48,
                         encoder_max_relative_position=max_rel, hidden_dropout=0.0, attention_dropout=0.0,
                         activation_dropout=0.0, encoder_layerdrop=0.0, hidden_act="gelu")
    cfg._attn_implementation = "eager"
    hf = st5.SpeechT5Encoder(cfg).eval()
    with torch.no_grad():  # random weights everywhere, non-trivial LayerNorm affines
        for p in hf.parameters():
            p.normal_(0, 0.3) if p.dim() > 1 else p.normal_(0.1, 0.3)
    ours = TransformerEncoder(32, 48, layers, 4, position="relative", max_relative_distance=max_rel,
                              dropout=0.0, attention_dropout=0.0).eval()
    sd = {"layer_norm.weight": hf.layer_norm.weight, "layer_norm.bias": hf.layer_norm.bias,
          "pos_emb.pe_k.weight": hf.embed_positions.pe_k.weight}
    for i, layer in enumerate(hf.layers):
        pairs = {"self_attn.q_proj": layer.attention.q_proj, "self_attn.k_proj": layer.attention.k_proj,
                 "self_attn.v_proj": layer.attention.v_proj, "self_attn.out_proj": layer.attention.out_proj,
                 "self_attn_layer_norm": layer.layer_norm, "fc1": layer.feed_forward.intermediate_dense,
                 "fc2": layer.feed_forward.output_dense, "final_layer_norm": layer.final_layer_norm}
        for name, mod in pairs.items():
            sd[f"layers.{i}.{name}.weight"] = mod.weight
            sd[f"layers.{i}.{name}.bias"] = mod.bias
    ours.load_state_dict(sd, strict=True)
    return ours, hf


def test_relative_matches_speecht5_encoder_with_padding():
    ours, hf = _speecht5_pair()
    x = torch.randn(3, 20, 32)  # T > max distance: clamping is exercised
    lengths = torch.tensor([20, 13, 5])
    valid = torch.arange(20)[None] < lengths[:, None]
    with torch.no_grad():
        ref = hf(x, attention_mask=valid.long(), output_hidden_states=True).hidden_states
        got = ours(x, lengths)
    assert len(ref) == len(got) == 3
    for r, g in zip(ref, got):
        assert (r[valid] - g[valid]).abs().max() < 1e-5


def test_default_is_conv_with_unchanged_names_and_init():
    torch.manual_seed(0)
    old_style = TransformerEncoder(32, 64, 2, 4, conv_pos=8, conv_pos_groups=4)  # the pre-injection call
    torch.manual_seed(0)
    explicit = TransformerEncoder(32, 64, 2, 4, position="conv", conv_pos=8, conv_pos_groups=4)
    assert old_style.positions == ("conv",)
    a, b = old_style.state_dict(), explicit.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [k for k in a if not k.startswith("layers.")] == [
        "pos_conv.0.weight_v", "pos_conv.0.weight_g", "pos_conv.0.bias", "layer_norm.weight", "layer_norm.bias"]


def test_state_dict_keys_per_kind():
    def extra(position, **kw):
        enc = TransformerEncoder(**SMALL, position=position, **kw)
        return sorted(k for k in enc.state_dict() if not k.startswith(("layers.", "layer_norm.")))

    assert extra("none") == []
    assert extra("sinusoidal") == []
    assert extra("sinusoidal", sinusoidal_scale=True) == ["pos_sinusoidal.alpha"]
    assert extra("relative") == ["pos_emb.pe_k.weight"]
    rel = TransformerEncoder(**SMALL, position="relative", max_relative_distance=5)
    assert rel.pos_emb.pe_k.weight.shape == (10, 8)
    assert extra(("conv", "relative")) == ["pos_conv.0.bias", "pos_conv.0.weight_g", "pos_conv.0.weight_v",
                                           "pos_emb.pe_k.weight"]


@pytest.mark.parametrize("position", KINDS)
@pytest.mark.parametrize("layer_norm_first", [False, True])
def test_padding_invariance(position, layer_norm_first):
    torch.manual_seed(0)
    enc = TransformerEncoder(**SMALL, position=position, layer_norm_first=layer_norm_first,
                             max_relative_distance=4).eval()
    xs = [torch.randn(n, 32) for n in (16, 11, 1)]
    x = torch.full((3, 16, 32), 3.0)  # garbage in the padding
    for i, t in enumerate(xs):
        x[i, : len(t)] = t
    lengths = torch.tensor([16, 11, 1])
    with torch.no_grad():
        batched = enc(x, lengths)
        for i, t in enumerate(xs):
            for b, s in zip(batched, enc(t[None])):
                torch.testing.assert_close(b[i, : len(t)], s[0], atol=1e-5, rtol=1e-5)
                assert b[i, len(t):].abs().sum() == 0


@pytest.mark.parametrize("position", ["sinusoidal", "relative", "none"])
def test_position_information(position):
    """Without positions the encoder is permutation-equivariant; with them it is not."""
    torch.manual_seed(0)
    enc = TransformerEncoder(**SMALL, position=position).eval()
    with torch.no_grad():
        if enc.pos_emb is not None:
            enc.pos_emb.pe_k.weight.mul_(5.0)
        x = torch.randn(1, 10, 32)
        perm = torch.randperm(10)
        y, yp = enc(x)[-1], enc(x[:, perm])[-1]
    equivariant = torch.allclose(y[:, perm], yp, atol=1e-5)
    assert equivariant == (position == "none")


def test_bad_position_names():
    for bad, match in (("rope", "unknown kind"), (("none", "conv"), "cannot be combined"),
                       (("conv", "conv"), "twice")):
        with pytest.raises(ValueError, match=match):
            TransformerEncoder(**SMALL, position=bad)
    assert TransformerEncoder(**SMALL, position="none").positions == ()
