"""MAE against ``transformers.ViTMAEForPreTraining`` (random small config, offline), weights copied by the key table.

Oracle quirk: transformers 5.x leaves the fixed sin-cos tables (``position_embeddings``,
``decoder_pos_embed``) at zero when a model is built from a config (only checkpoint loading or
its own ``initialize_weights`` fills them), so the test calls its ``initialize_weights``
first; :func:`hf_to_speechssl` then checks that transformers' tables equal ours.
"""
from __future__ import annotations

import pytest
import torch

from speechssl.nn.losses import masked_mse
from speechssl.upstream.mae.config import MAEConfig
from speechssl.upstream.mae.hf import config_from_hf, config_to_hf, hf_to_speechssl
from speechssl.upstream.mae.model import MAEModel, MAEPretrainModel

transformers = pytest.importorskip("transformers")

CFG = MAEConfig(image_size=32, channels=3, patch=4, dim=48, ffn_dim=96, layers=3, heads=4, decoder_dim=32,
                decoder_ffn_dim=64, decoder_layers=2, decoder_heads=2)
TOL = 1e-5


def _hf(mask_ratio: float, norm_pix_loss: bool, cfg: MAEConfig = CFG):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        hf = transformers.ViTMAEForPreTraining(config_to_hf(cfg, mask_ratio=mask_ratio, norm_pix_loss=norm_pix_loss))
        emb = hf.vit.embeddings
        if hasattr(emb.patch_embeddings.projection, "_is_hf_initialized"):
            del emb.patch_embeddings.projection._is_hf_initialized
        with torch.no_grad():
            emb.initialize_weights()
            hf.decoder.initialize_weights(emb.patch_embeddings.num_patches)
            for p in hf.parameters():  # biases, norms and tokens away from their 0/1 init
                if p.requires_grad:
                    p.add_(0.02 * torch.randn_like(p))
    return hf.eval()


def _inputs(batch: int = 3, cfg: MAEConfig = CFG):
    g = torch.Generator().manual_seed(1)
    n = (cfg.image_size // cfg.patch) ** 2
    return torch.rand(batch, cfg.channels, cfg.image_size, cfg.image_size, generator=g), torch.rand(batch, n, generator=g)


@pytest.mark.parametrize("mask_ratio, norm_pix_loss", [(0.75, True), (0.75, False), (0.5, True)])
def test_pretraining_loss_logits_and_grads_match_transformers(mask_ratio, norm_pix_loss):
    hf = _hf(mask_ratio, norm_pix_loss)
    ours = MAEPretrainModel(CFG, mask_ratio=mask_ratio, norm_pix_loss=norm_pix_loss).eval()
    ours.load_state_dict(hf_to_speechssl(hf.state_dict(), CFG), strict=True)
    images, noise = _inputs()
    ref = hf(pixel_values=images, noise=noise)
    out = ours(images, noise)
    res = masked_mse(out.pred, out.target, out.mask)
    loss = res.loss / res.count
    assert torch.equal(out.mask, ref.mask.bool()) and torch.equal(out.ids_restore, ref.ids_restore)
    assert float((out.pred - ref.logits).detach().abs().max()) <= TOL
    assert abs(float(loss.detach()) - float(ref.loss.detach())) <= TOL
    ref.loss.backward()
    loss.backward()
    ours_params = dict(ours.named_parameters())
    table = hf_to_speechssl({k: p for k, p in hf.named_parameters() if p.requires_grad}, CFG)
    for name, hf_param in table.items():
        g_ref, g = hf_param.grad, ours_params[name].grad
        assert g is not None and float((g - g_ref).abs().max()) <= TOL * max(1.0, float(g_ref.abs().max())), name


def test_upstream_equals_the_unmasked_transformers_encoder():
    hf = _hf(0.0, True)
    model = MAEModel(CFG).eval()
    sd = hf_to_speechssl(hf.state_dict(), CFG)
    model.load_state_dict({k[len("upstream."):]: v for k, v in sd.items() if k.startswith("upstream.")}, strict=True)
    images, _ = _inputs()
    n = model.vit.num_patches
    order = torch.arange(n, dtype=torch.float32).expand(len(images), n)  # keep all, in order
    with torch.no_grad():
        ref = hf.vit(pixel_values=images, noise=order)
        out = model(images)
    assert out["last_hidden_state"].shape == (3, 1 + n, CFG.dim)
    assert float((out["last_hidden_state"] - ref.last_hidden_state).abs().max()) <= TOL


def test_config_round_trip_and_strict_key_table():
    assert config_from_hf(config_to_hf(CFG)) == CFG
    hf = _hf(0.75, True)
    state = dict(hf.state_dict())
    state["vit.extra.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="vit.extra.weight"):
        hf_to_speechssl(state, CFG)
    state = dict(hf.state_dict())
    state["vit.embeddings.position_embeddings"] = torch.zeros_like(state["vit.embeddings.position_embeddings"])
    with pytest.raises(ValueError, match="sin-cos"):
        hf_to_speechssl(state, CFG)
