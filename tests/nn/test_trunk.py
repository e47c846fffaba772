"""The shared wav2vec 2.0 / HuBERT trunk: position options, padding, and what converts."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from speechssl.convert.trunk_hf import speechssl_to_hf
from speechssl.nn.trunk import TrunkConfig, Wav2Vec2Trunk


def _cfg(**kw) -> TrunkConfig:
    return TrunkConfig(conv_feature_layers=((16, 10, 5),) + ((16, 3, 2),) * 4 + ((16, 2, 2),) * 2,
                       encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
                       encoder_attention_heads=4, conv_pos=8, conv_pos_groups=4, **kw)


@pytest.mark.parametrize("position", [("conv",), ("conv", "relative"), ("sinusoidal",), ("none",)])
def test_padding_never_changes_outputs_for_any_position_module(position):
    torch.manual_seed(0)
    model = Wav2Vec2Trunk(_cfg(encoder_position=position, max_relative_distance=8)).eval()
    g = torch.Generator().manual_seed(1)
    wavs = [torch.randn(6000, generator=g), torch.randn(3500, generator=g)]
    with torch.no_grad():
        batch = model(wavs)
        for i, w in enumerate(wavs):
            alone = model([w])
            n = int(alone["lengths"][0])
            assert int(batch["lengths"][i]) == n
            for hb, ha in zip(batch["hidden_states"], alone["hidden_states"]):
                torch.testing.assert_close(hb[i, :n], ha[0], atol=1e-5, rtol=1e-5)


def test_relative_positions_change_outputs_and_add_their_table():
    torch.manual_seed(0)
    plain = Wav2Vec2Trunk(_cfg())
    torch.manual_seed(0)
    rel = Wav2Vec2Trunk(_cfg(encoder_position=("conv", "relative"), max_relative_distance=8))
    extra = set(rel.state_dict()) - set(plain.state_dict())
    assert extra and all("pos_emb" in k for k in extra)


def test_bad_position_names_the_field():
    with pytest.raises(ValueError, match="encoder_position must name some of"):
        Wav2Vec2Trunk(_cfg(encoder_position=("rotary",)))


def test_hf_export_refuses_positions_transformers_lacks():
    cfg = _cfg(encoder_position=("conv", "relative"))
    model = Wav2Vec2Trunk(cfg)
    with pytest.raises(ValueError, match="only the convolutional position embedding"):
        speechssl_to_hf(cfg, model.state_dict())
    plain = dataclasses.replace(cfg, encoder_position=("conv",))
    hf_config, _ = speechssl_to_hf(plain, Wav2Vec2Trunk(plain).state_dict())
    assert hf_config["model_type"] == "hubert"
