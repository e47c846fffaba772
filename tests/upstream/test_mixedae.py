"""MixedAE: mixing / unmixing, the homologous attention mask, the two loss terms on hand-computed
cases, the task's loss, and a training step."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from speechssl.nn.losses import masked_mse
from speechssl.nn.masked_image import (
    encode_with_attention_mask, group_attention_mask, mix_images, mix_tokens, mixing_sources, unmix_tokens,
)
from speechssl.nn.vit import VisionTransformer, patchify
from speechssl.train.task import PretrainContext
from speechssl.upstream.mixedae import (
    METHOD, MixedAEConfig, MixedAEPretrainModel, MixedAETask, MixedAETaskConfig, homologous_contrastive,
    image_contrastive, source_halves,
)


def _vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(8, 2, 3, 16, 32, 2, 2, cls_token=True)  # 4 x 4 = 16 patches


# ------------------------------------------------------------------------------------------------ mixing


def test_mixing_sources_are_balanced_and_follow_the_noise() -> None:
    noise = torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.7, 0.2]])  # sorted positions: 1, 5, 3, 2, 4, 0
    source = mixing_sources(noise, 3)
    # dealt in turn: pos1->0, pos5->1, pos3->2, pos2->0, pos4->1, pos0->2
    assert source.tolist() == [[2, 0, 0, 2, 1, 1]]
    many = mixing_sources(torch.rand(5, 64, generator=torch.Generator().manual_seed(0)), 4)
    for k in range(4):
        assert (many == k).sum(dim=1).tolist() == [16] * 5
    with pytest.raises(ValueError, match="r must be in 1..6"):
        mixing_sources(noise, 7)


def test_mix_then_unmix_round_trip_is_exact() -> None:
    g = torch.Generator().manual_seed(1)
    G, r, N, D = 3, 4, 16, 5
    tokens = torch.randn(G * r, N, D, generator=g)
    source = mixing_sources(torch.rand(G, N, generator=g), r)
    mixed = mix_tokens(tokens, source, r)
    # by hand: mixed[g, n] = tokens[g*r + source[g, n], n]
    for gi in range(G):
        for n in range(N):
            assert torch.equal(mixed[gi, n], tokens[gi * r + int(source[gi, n]), n])
    fill = torch.full((D,), -7.0)
    back = unmix_tokens(mixed, source, r, fill)  # (G*r, N, D)
    own = (source[:, None, :] == torch.arange(r)[None, :, None]).reshape(G * r, N)
    assert torch.equal(back[own], tokens[own])  # every image gets its own patches back, bit for bit
    assert torch.equal(back[~own], fill.expand(int((~own).sum()), D))
    assert torch.equal(mix_tokens(back, source, r), mixed)  # and mixing again gives the mixed tokens


def test_mixed_images_embed_as_mixed_tokens() -> None:
    vit = _vit()
    g = torch.Generator().manual_seed(2)
    images = torch.rand(8, 3, 8, 8, generator=g)
    source = mixing_sources(torch.rand(2, 16, generator=g), 4)
    mixed = mix_images(images, source, 4, 2)
    assert torch.equal(patchify(mixed, 2), mix_tokens(patchify(images, 2), source, 4))
    # a patch-wise embedding commutes with mixing (positions never move)
    torch.testing.assert_close(vit.embed(mixed), mix_tokens(vit.embed(images), source, 4), rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------------ attention


def test_group_attention_mask_by_hand() -> None:
    allowed = group_attention_mask(torch.tensor([[0, 1, 0, 1]]), prefix=1)
    expected = torch.tensor([[1, 1, 1, 1, 1],   # class token: everything
                             [0, 1, 0, 1, 0],   # patch 0 (image 0): patches 0 and 2
                             [0, 0, 1, 0, 1],   # patch 1 (image 1): patches 1 and 3
                             [0, 1, 0, 1, 0],
                             [0, 0, 1, 0, 1]], dtype=torch.bool)
    assert torch.equal(allowed[0], expected)


def test_homologous_attention_weights_are_zero_across_sources() -> None:
    vit = _vit()
    g = torch.Generator().manual_seed(3)
    source = mixing_sources(torch.rand(2, 16, generator=g), 4)
    tokens = vit.with_prefix(torch.randn(2, 16, 16, generator=g))  # (G, 17, D)
    allowed = group_attention_mask(source, prefix=1)
    layer = vit.encoder.layers[0]
    attn = layer.self_attn
    x = layer.self_attn_layer_norm(tokens)
    G, T, D = x.shape
    H, Dh = attn.num_heads, attn.head_dim
    q = attn.q_proj(x).view(G, T, H, Dh).transpose(1, 2)
    k = attn.k_proj(x).view(G, T, H, Dh).transpose(1, 2)
    v = attn.v_proj(x).view(G, T, H, Dh).transpose(1, 2)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(Dh)
    weights = scores.masked_fill(~allowed[:, None], float("-inf")).softmax(dim=-1)  # (G, H, T, T), by hand
    patch_src = source[:, :, None] != source[:, None, :]  # (G, N, N) heterologous pairs
    assert torch.all(weights[:, :, 1:, 1:][patch_src[:, None].expand(-1, H, -1, -1)] == 0)
    assert torch.all(weights[:, :, 1:, 0] == 0)  # patches never read the class token
    assert torch.all(weights[:, :, 1:, 1:][(~patch_src)[:, None].expand(-1, H, -1, -1)] > 0)
    # the layer (SDPA with the -inf bias) computes exactly these weights: its first residual branch
    by_hand = attn.out_proj((weights @ v).transpose(1, 2).reshape(G, T, D))
    via_layer = encode_with_attention_mask(vit, tokens, allowed)
    layer_in = vit.encoder.dropout(tokens)
    torch.testing.assert_close(layer_in + by_hand + layer._ffn(layer.final_layer_norm(layer_in + by_hand)),
                               via_layer[1], rtol=1e-5, atol=1e-6)


def test_a_patch_never_sees_another_source_image() -> None:
    """Changing one source image's pixels leaves every other source's patch tokens, at every layer, bit-identical."""
    torch.manual_seed(0)
    model = MixedAEPretrainModel(MixedAEConfig(image_size=8, patch=2, dim=16, ffn_dim=32, heads=2, decoder_dim=8,
                                               decoder_ffn_dim=16, decoder_heads=2, hc_dim=8)).eval()
    vit = model.upstream.vit
    g = torch.Generator().manual_seed(4)
    images = torch.rand(4, 3, 8, 8, generator=g)
    source = mixing_sources(torch.rand(1, 16, generator=g), 4)

    def states(imgs: torch.Tensor) -> list[torch.Tensor]:
        mixed = mix_images(imgs, source, 4, 2)
        return encode_with_attention_mask(vit, vit.with_prefix(vit.embed(mixed)), group_attention_mask(source, 1))

    before = states(images)
    changed = images.clone()
    changed[2] = torch.rand(3, 8, 8, generator=g)
    after = states(changed)
    others = (source[0] != 2)
    for h0, h1 in zip(before, after):
        assert torch.equal(h0[0, 1:][others], h1[0, 1:][others])
    assert not torch.equal(before[-1][0, 1:][~others], after[-1][0, 1:][~others])


def test_an_all_true_mask_is_the_plain_encoder() -> None:
    vit = _vit().eval()
    tokens = vit.with_prefix(vit.embed(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))))
    full = torch.ones(2, 17, 17, dtype=torch.bool)
    for a, b in zip(encode_with_attention_mask(vit, tokens, full), vit.encode(tokens)):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-6)
    with pytest.raises(ValueError, match="at least one key"):
        encode_with_attention_mask(vit, tokens, torch.zeros(2, 17, 17, dtype=torch.bool))


# ------------------------------------------------------------------------------------------------ losses


def test_homologous_contrastive_by_hand() -> None:
    tau = 0.5
    z = torch.tensor([[[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-0.8, 0.6], [3.0, 4.0]]])  # last: unit (0.6, 0.8)
    source = torch.tensor([[0, 0, 1, 1, 0]])
    valid = torch.tensor([[True, True, True, True, False]])  # patch 4 is a filler image's: no part
    total, anchors = homologous_contrastive(z, source, valid, tau)
    unit = [(1.0, 0.0), (0.6, 0.8), (0.0, 1.0), (-0.8, 0.6)]
    src = [0, 0, 1, 1]
    expected = 0.0
    for i in range(4):
        s = {k: (unit[i][0] * unit[k][0] + unit[i][1] * unit[k][1]) / tau for k in range(4) if k != i}
        denom = math.log(sum(math.exp(v) for v in s.values()))
        pos = [k for k in s if src[k] == src[i]]
        expected += -sum(s[k] - denom for k in pos) / len(pos)
    assert anchors == 4
    assert float(total) == pytest.approx(expected, rel=1e-6)
    # a source with one valid patch has no positive: it is no anchor, but still a negative for the others
    total1, anchors1 = homologous_contrastive(z, torch.tensor([[0, 0, 1, 2, 0]]), valid, tau)
    assert anchors1 == 2


def _tiny_model() -> MixedAEPretrainModel:
    torch.manual_seed(0)
    return MixedAEPretrainModel(MixedAEConfig(image_size=8, patch=2, dim=16, ffn_dim=32, heads=2, decoder_dim=8,
                                              decoder_ffn_dim=16, decoder_heads=2, hc_dim=8), mix=4)


def test_scored_patches_are_those_each_real_image_did_not_give() -> None:
    model = _tiny_model()
    g = torch.Generator().manual_seed(6)
    images, noise = torch.rand(5, 3, 8, 8, generator=g), torch.rand(5, 16, generator=g)
    out = model(images, noise)
    assert out.pred.shape == (8, 16, 12) and out.real.tolist() == [True] * 5 + [False] * 3
    assert out.mask.sum(dim=1).tolist() == [12] * 5 + [0] * 3  # 16 - 16/4 per real image, fillers none
    for row in range(5):
        gi, k = divmod(row, 4)
        assert torch.equal(out.mask[row], out.source[gi] != k)
    assert torch.equal(out.source, mixing_sources(noise[[0, 4]], 4))  # group g mixes by its first image's noise
    # fillers repeat the batch's first images and are never anchors: group 1 has one real image (4 patches)
    assert out.hc_anchors == 16 + 4
    # MAE's normalised-pixel target of each image
    t = patchify(images, 2)
    t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6) ** 0.5
    assert torch.equal(out.target[:5], t) and torch.equal(out.target[5:], t[:3])


def test_task_loss_is_reconstruction_plus_weighted_contrast(tmp_path: Path) -> None:
    cfg = MixedAETaskConfig(data=str(tmp_path), hc_weight=0.3)
    task = MixedAETask(cfg, PretrainContext(method="mixedae", model=MixedAEConfig(image_size=8, patch=2, dim=16,
                                                                                   ffn_dim=32, decoder_dim=8,
                                                                                   decoder_ffn_dim=16, hc_dim=8),
                                            seed=0))
    model = _tiny_model()
    g = torch.Generator().manual_seed(7)
    batch = {"image": torch.rand(8, 3, 8, 8, generator=g), "noise": torch.rand(8, 16, generator=g)}
    with torch.no_grad():
        loss, size, logs = task.loss(model, batch)
        out = model(batch["image"], batch["noise"])
    mse = masked_mse(out.pred, out.target, out.mask)
    hc = float(out.hc_sum) / out.hc_anchors
    assert size == 8 * 12 == mse.count
    assert float(loss) == pytest.approx(float(mse.loss) + 0.3 * size * hc, rel=1e-6)
    assert logs["mse"] / size == pytest.approx(float(mse.loss) / size) and logs["hc"] / size == pytest.approx(hc)


def test_one_training_step_lowers_the_loss(tmp_path: Path) -> None:
    cfg = MixedAETaskConfig(data=str(tmp_path))
    task = MixedAETask(cfg, PretrainContext(method="mixedae", model=MixedAEConfig(image_size=8, patch=2, dim=16,
                                                                                   ffn_dim=32, decoder_dim=8,
                                                                                   decoder_ffn_dim=16, hc_dim=8),
                                            seed=0))
    model = _tiny_model()
    g = torch.Generator().manual_seed(8)
    batch = {"image": torch.rand(8, 3, 8, 8, generator=g), "noise": torch.rand(8, 16, generator=g)}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss0, size, logs0 = task.loss(model, batch)
    opt.zero_grad()
    (loss0 / size).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if not n.endswith("cls_token")), \
        [n for n, p in model.named_parameters() if p.grad is None]
    opt.step()
    with torch.no_grad():
        loss1, _, logs1 = task.loss(model, batch)
    assert float(loss1) < float(loss0.detach())
    assert logs1["mse"] < logs0["mse"] and logs1["hc"] < logs0["hc"]


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    ctx = PretrainContext(method="mixedae", model=MixedAEConfig(), seed=0)
    for kwargs, msg in (({"mix": 1}, "task.mix must be in 2..64"), ({"hc_temperature": 0.0}, "task.hc_temperature"),
                        ({"hc_weight": -1.0}, "task.hc_weight"), ({"data": ""}, "task.data is empty")):
        with pytest.raises(ValueError, match=msg):
            MixedAETask(MixedAETaskConfig(**{"data": str(tmp_path), **kwargs}), ctx)
    with pytest.raises(ValueError, match="model.image_size"):
        MixedAEConfig(image_size=30).validate()
    assert METHOD.modality == "image" and set(METHOD.presets) == {"tiny", "small"}


def test_source_halves_alternate_within_each_image() -> None:
    source = torch.tensor([[0, 1, 0, 0, 1, 1, 0, 1]])
    # image 0 at positions 0, 2, 3, 6 -> halves 0, 1, 0, 1; image 1 at 1, 4, 5, 7 -> 0, 1, 0, 1
    assert source_halves(source, 2).tolist() == [[0, 0, 1, 0, 1, 0, 1, 1]]


def test_image_contrastive_by_hand() -> None:
    tau = 0.5
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[0.6, 0.8], [-0.6, 0.8]])
    total, count = image_contrastive(a, b, tau)
    z = [(1.0, 0.0), (0.0, 1.0), (0.6, 0.8), (-0.6, 0.8)]
    partner = [2, 3, 0, 1]
    expected = 0.0
    for i in range(4):
        s = {k: (z[i][0] * z[k][0] + z[i][1] * z[k][1]) / tau for k in range(4) if k != i}
        expected += -(s[partner[i]] - math.log(sum(math.exp(v) for v in s.values())))
    assert count == 4 and float(total) == pytest.approx(expected, rel=1e-6)


def test_image_level_loss_pools_each_real_image_halves() -> None:
    torch.manual_seed(0)
    model = MixedAEPretrainModel(MixedAEConfig(image_size=8, patch=2, dim=16, ffn_dim=32, heads=2, decoder_dim=8,
                                               decoder_ffn_dim=16, decoder_heads=2, hc_dim=8), mix=4,
                                 hc_level="image")
    g = torch.Generator().manual_seed(9)
    images, noise = torch.rand(6, 3, 8, 8, generator=g), torch.rand(6, 16, generator=g)
    with torch.no_grad():
        out = model(images, noise)
    assert out.hc_anchors == 2 * 6  # two halves of each real image, fillers left out
    # by hand: the pooled head outputs of each image's two halves
    vit = model.upstream.vit
    rows = torch.arange(8) % 6
    mixed = mix_images(images[rows], out.source, 4, 2)
    latent = encode_with_attention_mask(vit, vit.with_prefix(vit.embed(mixed)), group_attention_mask(out.source, 1))[-1]
    feats = model.hc_head(latent[:, 1:])
    half = source_halves(out.source, 4)
    a, b = [], []
    for row in range(6):
        gi, k = divmod(row, 4)
        a.append(feats[gi][(out.source[gi] == k) & (half[gi] == 0)].mean(0))
        b.append(feats[gi][(out.source[gi] == k) & (half[gi] == 1)].mean(0))
    ref, _ = image_contrastive(torch.stack(a).detach(), torch.stack(b).detach(), model.hc_temperature)
    assert float(out.hc_sum) == pytest.approx(float(ref), rel=1e-5)
    with pytest.raises(ValueError, match="hc_level must be"):
        MixedAEPretrainModel(MixedAEConfig(), hc_level="pixel")
