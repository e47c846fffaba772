"""speechssl.nn.vit and nn.token_masking against explicit loops and transformers' ViTMAE pieces."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from speechssl.nn.token_masking import keep_count, masking_noise, random_masking, restore_tokens
from speechssl.nn.vit import PatchEmbedding, VisionTransformer, patchify, sincos_2d_table, unpatchify


def test_sincos_table_matches_the_formula_and_transformers():
    gh, gw, dim = 3, 5, 16
    table = sincos_2d_table((gh, gw), dim, order="hw")
    q = dim // 4
    for i in range(gh):
        for j in range(gw):
            row = table[i * gw + j]
            for k in range(q):
                w = 1.0 / 10000 ** (k / q)
                ref = [math.sin(i * w), math.cos(i * w), math.sin(j * w), math.cos(j * w)]
                got = [float(row[k]), float(row[q + k]), float(row[2 * q + k]), float(row[3 * q + k])]
                assert max(abs(a - b) for a, b in zip(ref, got)) < 1e-6
    swapped = sincos_2d_table((gh, gw), dim, order="wh")
    assert torch.equal(swapped, torch.cat([table[:, dim // 2:], table[:, :dim // 2]], 1))
    mae = pytest.importorskip("transformers.models.vit_mae.modeling_vit_mae")
    ref = mae.build_2d_sinusoidal_position_embedding(4, 4, embed_dim=32)
    assert torch.equal(sincos_2d_table((4, 4), 32, order="hw"), ref)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d_table((2, 2), 6)


def test_patchify_loop_and_inverse():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 12, generator=g)
    p = patchify(x, 4)
    assert p.shape == (2, 6, 48)
    for b in range(2):
        for n in range(6):
            r, c = divmod(n, 3)
            block = x[b, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4].permute(1, 2, 0).reshape(-1)  # (row, col, channel)
            assert torch.equal(p[b, n], block)
    assert torch.equal(unpatchify(p, 4, (2, 3), 3), x)
    with pytest.raises(ValueError, match="multiple of the patch"):
        patchify(torch.zeros(1, 3, 10, 8), 4)


def test_patch_embedding_is_a_strided_conv():
    emb = PatchEmbedding(3, 8, 4)
    x = torch.rand(2, 3, 8, 12, generator=torch.Generator().manual_seed(1))
    tokens = emb(x)
    assert emb.grid(8, 12) == (2, 3) and tokens.shape == (2, 6, 8)
    # token n = linear map of patch n's pixels (channel, row, col order of the conv weight)
    w = emb.proj.weight.reshape(8, -1)
    patch = x[:, :, 4:8, 8:12].reshape(2, -1)  # row 1, col 2 -> token 5
    torch.testing.assert_close(tokens[:, 5], patch @ w.T + emb.proj.bias, atol=1e-6, rtol=1e-6)


def test_vision_transformer_contract_and_batch_invariance():
    torch.manual_seed(0)
    vit = VisionTransformer(16, 4, 3, 32, 64, 2, 2).eval()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = vit(x)
        alone = vit(x[1:2])
    assert len(out["hidden_states"]) == 3 and out["last_hidden_state"].shape == (3, 17, 32)
    assert out["lengths"].tolist() == [17] * 3 and out["patch_grid"] == (4, 4) and vit.prefix_tokens == 1
    torch.testing.assert_close(alone["last_hidden_state"][0], out["last_hidden_state"][1], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"expected images \(B, 3, 16, 16\)"):
        vit(torch.rand(1, 3, 20, 20))
    with pytest.raises(TypeError, match="float"):
        vit(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


def test_random_masking_matches_transformers_and_restores():
    mae = pytest.importorskip("transformers.models.vit_mae.modeling_vit_mae")
    g = torch.Generator().manual_seed(3)
    x, noise = torch.randn(4, 10, 6, generator=g), torch.rand(4, 10, generator=g)
    for ratio in (0.75, 0.5, 0.3):
        keep = keep_count(10, ratio)
        kept, mask, ids_restore = random_masking(x, noise, keep)
        fake = SimpleNamespace(config=SimpleNamespace(mask_ratio=ratio))
        ref_kept, ref_mask, ref_restore = mae.ViTMAEEmbeddings.random_masking(fake, x, noise)
        assert torch.equal(kept, ref_kept) and torch.equal(mask, ref_mask.bool()) and torch.equal(ids_restore, ref_restore)
        token = torch.randn(6, generator=g)
        full = restore_tokens(kept, token, ids_restore)
        for b in range(4):  # kept tokens back at their place, the mask token elsewhere
            for n in range(10):
                assert torch.equal(full[b, n], token if mask[b, n] else x[b, n])
    assert keep_count(64, 0.75) == 16 and keep_count(3, 0.9) == 1
    with pytest.raises(ValueError, match="mask_ratio"):
        keep_count(10, 1.0)
    with pytest.raises(ValueError, match="explicit torch.Generator"):
        masking_noise(2, 3, None)
    a = masking_noise(2, 3, torch.Generator().manual_seed(5))
    assert torch.equal(a, masking_noise(2, 3, torch.Generator().manual_seed(5)))
