"""speechssl.nn.supernet: slicing rules, depth map, sampling; a sliced layer equals a dense layer of the slice."""
from __future__ import annotations

import pytest
import torch

from speechssl.nn.supernet import SearchSpace, Subnet, SupernetEncoder, SupernetLayer, depth_map, ffn_units
from speechssl.nn.transformer import TransformerEncoderLayer

# the official LightHuBERT table (1 = keep), scaling_transformer.STransformerEncoder.depth_maps
OFFICIAL_DEPTH = {
    6: [1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0], 7: [1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 0, 0],
    8: [1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 0], 9: [1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0],
    10: [1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 0], 11: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0], 12: [1] * 12,
}


@pytest.mark.parametrize("keep", sorted(OFFICIAL_DEPTH))
def test_depth_map_is_the_official_table(keep):
    assert depth_map(12, keep) == [i for i, k in enumerate(OFFICIAL_DEPTH[keep]) if k]


def test_depth_map_of_other_depths_drops_block_ends_or_the_tail():
    assert depth_map(3, 2) == [0, 1] and depth_map(4, 2) == [0, 1]
    with pytest.raises(ValueError, match="not in 1..3"):
        depth_map(3, 4)


def test_ffn_units_take_the_first_units_of_each_chunk():
    # D=768, F=3072 (4 chunks of 768); E=512, ratio 3.5 -> 512 + 512 + 512 + 256 units
    idx = ffn_units(768, 3072, 512, 1792)
    expected = torch.cat([torch.arange(512), 768 + torch.arange(512), 1536 + torch.arange(512), 2304 + torch.arange(256)])
    assert torch.equal(idx, expected)
    assert torch.equal(ffn_units(768, 3072, 768, 3072), torch.arange(3072))
    assert torch.equal(ffn_units(768, 3072, 768, 2688), torch.arange(2688))  # full width: a prefix


def test_sampling_is_seeded_and_covers_the_space():
    space = SearchSpace((64, 128), (1, 2), (3.0, 4.0), (2, 3))
    a = [space.sample(torch.Generator().manual_seed(5)) for _ in range(2)]
    assert a[0] == a[1]
    g = torch.Generator().manual_seed(0)
    draws = [space.sample(g) for _ in range(200)]
    assert all(space.contains(s) for s in draws)
    assert {s.embed_dim for s in draws} == {64, 128} and {s.num_layers for s in draws} == {2, 3}
    assert {h for s in draws for h in s.heads} == {1, 2}
    assert space.max() == Subnet(128, (2, 2, 2), (512, 512, 512)) and space.min() == Subnet(64, (1, 1), (192, 192))


def _dense_from_slice(layer: SupernetLayer, E: int, heads: int, ffn: int, post_ln: bool) -> TransformerEncoderLayer:
    A = heads * 64
    units = ffn_units(layer.dim, layer.ffn_dim, E, ffn)
    dense = TransformerEncoderLayer(E, ffn, heads, dropout=0.0, attention_dropout=0.0, layer_norm_first=not post_ln)
    dense.self_attn = type(dense.self_attn)(E, heads)  # dim E, but A = 64 * heads may differ from E
    with torch.no_grad():
        for name in ("q_proj", "k_proj", "v_proj"):
            src, dst = getattr(layer.self_attn, name), torch.nn.Linear(E, A)
            dst.weight.copy_(src.weight[:A, :E]); dst.bias.copy_(src.bias[:A])
            setattr(dense.self_attn, name, dst)
        dst = torch.nn.Linear(A, E)
        dst.weight.copy_(layer.self_attn.out_proj.weight[:E, :A]); dst.bias.copy_(layer.self_attn.out_proj.bias[:E])
        dense.self_attn.out_proj = dst
        dense.self_attn.head_dim, dense.self_attn.num_heads = 64, heads
        for name in ("self_attn_layer_norm", "final_layer_norm"):
            getattr(dense, name).weight.copy_(getattr(layer, name).weight[:E])
            getattr(dense, name).bias.copy_(getattr(layer, name).bias[:E])
        dense.fc1.weight.copy_(layer.fc1.weight[units, :E]); dense.fc1.bias.copy_(layer.fc1.bias[units])
        dense.fc2.weight.copy_(layer.fc2.weight[:E, units]); dense.fc2.bias.copy_(layer.fc2.bias[:E])
    return dense.eval()


@pytest.mark.parametrize("post_ln", [True, False])
@pytest.mark.parametrize("E,heads,ffn", [(128, 2, 512), (64, 2, 256), (128, 1, 384), (64, 1, 192)])
def test_sliced_layer_equals_a_dense_layer_of_its_slice(E, heads, ffn, post_ln):
    torch.manual_seed(0)
    layer = SupernetLayer(128, 512, 2, dropout=0.0, attention_dropout=0.0, layer_norm_first=not post_ln).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 7, E)
    pad = torch.tensor([[False] * 7, [False] * 5 + [True] * 2])
    # the dense oracle's attention is MultiheadSelfAttention with head_dim patched to 64
    dense = _dense_from_slice(layer, E, heads, ffn, post_ln)
    with torch.no_grad():
        torch.testing.assert_close(layer(x, heads, ffn, pad), _dense_forward(dense, x, pad), atol=1e-5, rtol=1e-5)


def _dense_forward(dense: TransformerEncoderLayer, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    attn = dense.self_attn
    B, T, _ = x.shape

    def sa(h: torch.Tensor) -> torch.Tensor:
        q, k, v = (p(h).view(B, T, attn.num_heads, 64).transpose(1, 2) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        scores = (q @ k.transpose(-1, -2)) / 8.0
        scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, -1)
        return attn.out_proj(y)

    ffn = lambda h: dense.fc2(dense.activation(dense.fc1(h)))  # noqa: E731
    if dense.layer_norm_first:
        x = x + sa(dense.self_attn_layer_norm(x))
        return x + ffn(dense.final_layer_norm(x))
    x = dense.self_attn_layer_norm(x + sa(x))
    return dense.final_layer_norm(x + ffn(x))


def test_encoder_checks_subnets_and_counts_parameters():
    enc = SupernetEncoder(128, 512, 3, 2, conv_pos=8, conv_pos_groups=8)
    full = Subnet(128, (2, 2, 2), (512, 512, 512))
    dense = sum(p.numel() for p in enc.parameters()) - enc.pos_conv[0].weight_g.numel()
    assert enc.num_params(full) == dense
    assert enc.num_params(Subnet(64, (1, 1), (192, 192))) < dense / 3
    with pytest.raises(ValueError, match="heads"):
        enc.check(Subnet(128, (3, 2, 2), (512, 512, 512)))
    with pytest.raises(ValueError, match="embed_dim"):
        enc.check(Subnet(100, (2,), (400,)))


def test_macs_grow_with_the_subnet_and_frames():
    enc = SupernetEncoder(128, 512, 3, 2, conv_pos=8, conv_pos_groups=8)
    small, full = Subnet(64, (1, 1), (192, 192)), Subnet(128, (2, 2, 2), (512, 512, 512))
    assert enc.num_macs(small, 50) < enc.num_macs(full, 50) < enc.num_macs(full, 100)
    # one layer at T=1: q, k, v, out (4 E A) + scores and weighted sum (2 A) + FFN (2 E F), plus the position conv
    one = Subnet(128, (2,), (512,))
    assert SupernetEncoder(128, 512, 1, 2, conv_pos=8, conv_pos_groups=8).num_macs(one, 1) == (
        4 * 128 * 128 + 2 * 128 + 2 * 128 * 512 + 128 * 16 * 8)
