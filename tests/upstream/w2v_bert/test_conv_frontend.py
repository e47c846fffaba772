"""w2v-BERT with the paper's conv subsampling front end (frontend="conv")."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from speechssl.nn.conv_subsampling import subsampled_frames
from speechssl.upstream.w2v_bert.config import tiny
from speechssl.upstream.w2v_bert.model import W2vBertModel, W2vBertPretrainModel


def test_w2v_bert_conv_front_end_trains_and_refuses_hf_export():
    cfg = dataclasses.replace(tiny(), frontend="conv", conv_channels=8, dropout=0.0, dropout_input=0.0)
    assert cfg.downsample_rate == 640
    model = W2vBertPretrainModel(cfg)
    assert model.upstream.downsample_rate == 640 and model.quantizer.weight_proj.in_features == cfg.encoder_embed_dim
    g = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(2, 32000, generator=g)
    lengths = torch.tensor([32000, 24000])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        out = model(wav, lengths, generator=torch.Generator().manual_seed(1))
        loss = out["contrastive"] + out["mlm"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    assert model.upstream.frontend.subsampling.conv[0].weight.grad is not None   # the front end learns
    up = W2vBertModel(cfg)
    res = up([wav[0], wav[1, :24000]])
    assert res["lengths"].tolist() == [int(subsampled_frames(198)), int(subsampled_frames(148))]
    from speechssl.upstream.w2v_bert.hf import speechssl_config_to_hf
    with pytest.raises(ValueError, match="frontend='conv'"):
        speechssl_config_to_hf(cfg)
    with pytest.raises(ValueError, match="frontend: unknown"):
        dataclasses.replace(tiny(), frontend="cnn").validate()
