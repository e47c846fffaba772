"""CAE: losses by hand, the regressor layer against torch's MultiheadAttention, what each branch
sees (stop-gradient target, masked pixels hidden from the regressor), masks, and one step that
lowers the loss on the tiny image corpus."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from speechssl.registry import get_method
from speechssl.train.task import PretrainContext
from speechssl.upstream.cae import METHOD, PRESETS, CAEPretrainModel, CAETask, cae_losses
from speechssl.upstream.cae.masking import block_mask, mask_count, random_mask
from speechssl.upstream.cae.model import CAEOutput, RegressorLayer


def test_losses_on_a_hand_computed_case():
    pred = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]], requires_grad=True)
    target = torch.tensor([[[0.0, 0.0], [0.0, 1.0]]])
    latent_pred = torch.tensor([[[1.0, 1.0], [2.0, 0.0]]], requires_grad=True)
    latent_target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]], requires_grad=True)
    out = CAEOutput(pred, target, latent_pred, latent_target, torch.tensor([[True, True, False]]))
    res = cae_losses(out, align_weight=2.0)
    # recon: patch 1 (1 + 4) / 2 = 2.5, patch 2 (0 + 1) / 2 = 0.5 -> 3; align: (0 + 1) / 2 + (4 + 0) / 2 = 2.5
    assert float(res.recon.detach()) == 3.0 and float(res.align.detach()) == 2.5
    assert float(res.loss.detach()) == 3.0 + 2 * 2.5
    assert res.count == 2
    res.loss.backward()
    assert latent_target.grad is None  # the alignment target is a stop-gradient
    torch.testing.assert_close(latent_pred.grad, 2.0 * (latent_pred - latent_target).detach())  # 2 * 2 (p - t) / D


def test_regressor_layer_matches_torch_multihead_attention():
    torch.manual_seed(0)
    layer = RegressorLayer(8, 16, 2).eval()
    for p in layer.parameters():  # non-trivial norms and biases
        p.data.normal_(0, 0.3)
    g = torch.Generator().manual_seed(1)
    q, kv = torch.randn(2, 3, 8, generator=g), torch.randn(2, 7, 8, generator=g)
    pos_q, pos_k = torch.randn(2, 3, 8, generator=g), torch.randn(2, 7, 8, generator=g)
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([layer.q_proj.weight, layer.k_proj.weight, layer.v_proj.weight]))
        mha.in_proj_bias.copy_(torch.cat([layer.q_proj.bias, layer.k_proj.bias, layer.v_proj.bias]))
        mha.out_proj.weight.copy_(layer.out_proj.weight)
        mha.out_proj.bias.copy_(layer.out_proj.bias)
        attn, _ = mha(layer.norm_q(q + pos_q), layer.norm_k(kv + pos_k), layer.norm_v(kv), need_weights=False)
        x = layer.norm_out(q + attn)
        want = x + layer.fc2(F.gelu(layer.fc1(x)))
        got = layer(q, kv, pos_q, pos_k)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _model_and_mask(seed: int = 0) -> tuple[CAEPretrainModel, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = CAEPretrainModel(PRESETS["tiny"]()).eval()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed + 1))
    mask = torch.stack([torch.from_numpy(block_mask((8, 8), 32, np.random.default_rng(i))) for i in range(2)])
    return model, images, mask


def _patch_pixels(mask: torch.Tensor) -> torch.Tensor:
    """(B, N) patch mask on the 8 x 8 grid of 4-pixel patches -> (B, 1, 32, 32) pixel mask."""
    return mask.view(-1, 1, 8, 8).repeat_interleave(4, 2).repeat_interleave(4, 3)


def test_regressor_never_sees_masked_pixels_and_the_target_never_sees_visible_ones():
    model, images, mask = _model_and_mask()
    pixels = _patch_pixels(mask)
    noise = torch.rand(images.shape, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        base = model(images, mask)
        masked_changed = model(torch.where(pixels, noise, images), mask)
        visible_changed = model(torch.where(pixels, images, noise), mask)
    torch.testing.assert_close(masked_changed.latent_pred, base.latent_pred, rtol=0, atol=1e-6)
    torch.testing.assert_close(masked_changed.pred, base.pred, rtol=0, atol=1e-6)
    assert not torch.allclose(masked_changed.latent_target, base.latent_target)
    torch.testing.assert_close(visible_changed.latent_target, base.latent_target, rtol=0, atol=1e-6)
    assert not torch.allclose(visible_changed.latent_pred, base.latent_pred)
    # the target is the encoder's last hidden state of the masked patches alone (class token dropped)
    vit = model.upstream.vit
    with torch.no_grad():
        alone = vit.encode(vit.with_prefix(vit.embed(images)[mask].view(2, 32, -1)))[-1][:, 1:]
    torch.testing.assert_close(base.latent_target, alone, rtol=0, atol=0)
    assert not base.latent_target.requires_grad


def test_alignment_gradient_reaches_the_encoder_only_through_the_visible_branch():
    model, images, mask = _model_and_mask()
    model.train()
    out = model(images, mask)
    assert not out.latent_target.requires_grad
    cae_losses(out).align.backward()
    assert model.upstream.vit.patch_embed.proj.weight.grad is not None
    assert float(model.regressor[0].q_proj.weight.grad.abs().sum()) > 0
    assert model.head.weight.grad is None  # the decoder is not part of the alignment loss


def test_block_masks_by_hand_exact_counts_and_seeds():
    one = block_mask((4, 4), 4, np.random.default_rng(0), min_block=4, min_aspect=1.0).reshape(4, 4)
    rows, cols = np.nonzero(one)  # a single 2 x 2 block: area 4, aspect 1
    assert one.sum() == 4 and np.ptp(rows) == 1 and np.ptp(cols) == 1
    for seed in range(20):
        m = block_mask((8, 8), 32, np.random.default_rng(seed))
        assert m.shape == (64,) and m.sum() == 32
        assert np.array_equal(m, block_mask((8, 8), 32, np.random.default_rng(seed)))
        assert random_mask(64, 32, np.random.default_rng(seed)).sum() == 32
    assert mask_count(64, 0.5) == 32 and mask_count(64, 0.999) == 63
    with pytest.raises(ValueError, match="mask_ratio"):
        mask_count(64, 1.0)


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> CAETask:
    cfg = METHOD.example(tmp_path_factory.mktemp("cae"))
    return CAETask(cfg, PretrainContext(method="cae", model=PRESETS["tiny"](), seed=0))


def test_dataset_masks_depend_on_seed_epoch_and_index_only(task):
    ds = task.dataset("train")
    ds.set_epoch(1)
    first = [ds[i]["mask"] for i in range(3)]
    assert all(int(m.sum()) == 32 for m in first)
    again = task.dataset("train")
    again.set_epoch(1)
    assert all(torch.equal(a, again[i]["mask"]) for i, a in enumerate(first))
    again.set_epoch(2)
    assert not torch.equal(first[0], again[0]["mask"])


def test_one_training_step_lowers_the_loss(task):
    torch.manual_seed(0)
    model = task.build_model().train()
    ds = task.dataset("train")
    ds.set_epoch(1)
    batch = task.collate([ds[i] for i in range(8)])
    assert batch["image"].shape == (8, 3, 32, 32) and batch["mask"].shape == (8, 64)
    loss, size, logs = task.loss(model, batch)
    assert size == 8 * 32 and float(loss.detach()) / size == pytest.approx(logs["recon"] / size + 2 * logs["align"] / size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt.zero_grad()
    (loss / size).backward()
    opt.step()
    with torch.no_grad():
        after, _, _ = task.loss(model, batch)
    assert float(after) < float(loss.detach())


def test_registered_as_an_image_method():
    method = get_method("cae")
    assert method is METHOD and method.modality == "image" and set(method.presets) == {"tiny", "small"}
    model = method.build(method.preset("tiny"))
    out = model(torch.rand(2, 3, 32, 32))
    assert len(out["hidden_states"]) == 3 and out["last_hidden_state"].shape == (2, 65, 64)
    assert copy.deepcopy(model).prefix_tokens == 1 and model.patch_grid == (8, 8)
