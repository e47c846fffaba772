"""Parity with transformers' HubertModel / Wav2Vec2Model through the key tables, both directions.

Models are built from small random configs offline (no downloads). transformers' group-norm
models normalise over padding, so transformers always sees one utterance at a time; speechssl
sees the same utterances as one padded batch.
"""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from speechssl.convert.trunk_hf import (  # noqa: E402
    hf_key_table, hf_to_speechssl, speechssl_config_to_hf, speechssl_to_hf,
)
from speechssl.nn.trunk import Wav2Vec2Trunk  # noqa: E402

TOL = 1e-4

_COMMON = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
               num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)

CONFIGS = {
    "group-postln": dict(conv_dim=(16, 16, 16), conv_kernel=(10, 3, 2), conv_stride=(5, 2, 2)),
    "layer-preln-bias": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
                             conv_dim=(16, 24, 24), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2)),
    "group-bias-preln": dict(conv_bias=True, do_stable_layer_norm=True, conv_dim=(8, 8, 8, 16),
                             conv_kernel=(8, 4, 3, 2), conv_stride=(4, 2, 2, 2), num_hidden_layers=3),
    "layer-postln-oddpos": dict(feat_extract_norm="layer", conv_dim=(16, 16), conv_kernel=(10, 4),
                                conv_stride=(5, 4), num_conv_pos_embeddings=15, hidden_act="relu",
                                mask_time_prob=0.0),
}


def _hf_model(name: str, model_type: str = "hubert"):
    kw = {**_COMMON, **CONFIGS[name]}
    torch.manual_seed(0)
    if model_type == "hubert":
        model = transformers.HubertModel(transformers.HubertConfig(**kw))
    else:
        model = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**kw))
    with torch.no_grad():  # random (not default) norms and biases make the comparison meaningful
        for n, p in model.named_parameters():
            if "norm" in n or n.endswith("bias"):
                p.normal_(0.0, 0.5 if n.endswith("bias") else 1.0)
    return model.eval()


def _compare(ours: Wav2Vec2Trunk, hf, wavs: list[torch.Tensor]) -> float:
    worst = 0.0
    with torch.no_grad():
        batch = ours(wavs)
        for i, w in enumerate(wavs):
            ref = hf(w[None], output_hidden_states=True)
            expected = list(ref.hidden_states[:-1]) + [ref.last_hidden_state]
            n = int(batch["lengths"][i])
            assert n == ref.last_hidden_state.shape[1]
            assert len(expected) == len(batch["hidden_states"])
            for got, exp in zip(batch["hidden_states"], expected):
                worst = max(worst, (got[i, :n] - exp[0]).abs().max().item())
    return worst


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("model_type", ["hubert", "wav2vec2"])
def test_hidden_states_match_transformers(name, model_type):
    hf = _hf_model(name, model_type)
    cfg, state = hf_to_speechssl(hf.state_dict(), hf.config.to_dict(), normalize=False)
    ours = Wav2Vec2Trunk(cfg).eval()
    ours.load_state_dict(state, strict=True)
    torch.manual_seed(1)
    wavs = [torch.randn(3000), torch.randn(2222), torch.randn(1500)]
    assert _compare(ours, hf, wavs) <= TOL

    # back to transformers: a strict load into a fresh model gives the same outputs
    hf_cfg, hf_state = speechssl_to_hf(cfg, ours.state_dict(), model_type=model_type)
    cls = transformers.HubertModel if model_type == "hubert" else transformers.Wav2Vec2Model
    cfg_cls = transformers.HubertConfig if model_type == "hubert" else transformers.Wav2Vec2Config
    back = cls(cfg_cls(**hf_cfg)).eval()
    back.load_state_dict(hf_state, strict=True)
    assert _compare(ours, back, wavs[:1]) <= TOL


def test_legacy_weight_norm_names_and_task_prefix():
    hf = _hf_model("group-postln")
    legacy = {k.replace("parametrizations.weight.original0", "weight_g")
               .replace("parametrizations.weight.original1", "weight_v"): v for k, v in hf.state_dict().items()}
    assert "encoder.pos_conv_embed.conv.weight_g" in legacy
    cfg, state = hf_to_speechssl(legacy, hf.config.to_dict())
    _, ref = hf_to_speechssl(hf.state_dict(), hf.config.to_dict())
    assert state.keys() == ref.keys() and all(torch.equal(state[k], ref[k]) for k in state)
    # a HubertForCTC-style state dict: base model under "hubert.", plus a head
    ctc = {f"hubert.{k}": v for k, v in hf.state_dict().items()}
    ctc["lm_head.weight"] = torch.zeros(5, 32)
    with pytest.raises(ValueError, match="lm_head.weight"):
        hf_to_speechssl(ctc, hf.config.to_dict())
    _, dropped = hf_to_speechssl(ctc, hf.config.to_dict(), drop_heads=True)
    assert dropped.keys() == ref.keys()
    _, hf_legacy = speechssl_to_hf(cfg, state, weight_norm="legacy")
    assert "encoder.pos_conv_embed.conv.weight_v" in hf_legacy


def test_unknown_missing_and_misshapen_keys_are_named():
    hf = _hf_model("group-postln")
    sd = dict(hf.state_dict())
    extra = {**sd, "encoder.layers.0.attention.rotary.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="unexpected keys.*rotary"):
        hf_to_speechssl(extra, hf.config.to_dict())
    missing = {k: v for k, v in sd.items() if k != "encoder.layers.1.feed_forward.output_dense.bias"}
    with pytest.raises(ValueError, match="missing keys.*layers.1.feed_forward.output_dense.bias"):
        hf_to_speechssl(missing, hf.config.to_dict())
    bad = {**sd, "feature_projection.projection.weight": torch.zeros(3, 3)}
    with pytest.raises(ValueError, match="post_extract_proj.weight: expected shape"):
        hf_to_speechssl(bad, hf.config.to_dict())


def test_unsupported_options_raise():
    base = transformers.HubertConfig(**_COMMON, **CONFIGS["group-postln"]).to_dict()
    for key, value in (("feat_proj_layer_norm", False), ("conv_pos_batch_norm", True), ("add_adapter", True)):
        with pytest.raises(ValueError, match=key):
            hf_to_speechssl({}, {**base, key: value})
    with pytest.raises(ValueError, match="model_type"):
        hf_to_speechssl({}, {**base, "model_type": "wavlm"})


def test_key_table_is_a_bijection_onto_our_state_dict():
    hf = _hf_model("layer-preln-bias")
    cfg, _ = hf_to_speechssl(hf.state_dict(), hf.config.to_dict())
    table = hf_key_table(cfg, weight_norm="parametrizations")
    assert set(table) == set(hf.state_dict())
    assert set(table.values()) == set(Wav2Vec2Trunk(cfg).state_dict())
    assert speechssl_config_to_hf(cfg)["feat_extract_norm"] == "layer"
