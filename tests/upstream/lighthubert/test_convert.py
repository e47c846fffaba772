"""Official LightHuBERT checkpoint → speechssl: hidden-state parity with the official model code.

The oracle is the official ``LightHuBERT`` (mechanicalsea/lighthubert, MIT) as s3prl 0.4.18 ships
it under ``s3prl/upstream/lighthubert/lighthubert``; it is pure torch + numpy, so it is imported
from the installed s3prl's files without importing s3prl itself (whose package imports many
dependencies). Skipped when s3prl is not installed (``pip install --no-deps s3prl==0.4.18``).
The official model is built from a random small config (a 512-wide, 12-layer supernet, the
Small search space) and its state dict is saved in the official checkpoint layout.
"""
from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest
import torch

from speechssl.nn.supernet import Subnet
from speechssl.upstream.lighthubert.convert import convert_official
from speechssl.upstream.lighthubert.model import LightHubertModel

TOL = 1e-4


def _official():
    spec = importlib.util.find_spec("s3prl")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("s3prl (the official LightHuBERT code) is not installed: pip install --no-deps s3prl==0.4.18")
    root = Path(list(spec.submodule_search_locations)[0]) / "upstream" / "lighthubert" / "lighthubert"
    if not (root / "__init__.py").is_file():
        pytest.skip(f"no official LightHuBERT code at {root}")
    name = "_official_lighthubert"
    if name not in sys.modules:
        pkg = importlib.util.spec_from_file_location(name, root / "__init__.py", submodule_search_locations=[str(root)])
        module = importlib.util.module_from_spec(pkg)
        sys.modules[name] = module
        pkg.loader.exec_module(module)
    return sys.modules[name]


def _official_subnet(s: Subnet) -> dict:
    return {"atten_dim": [64 * h for h in s.heads], "embed_dim": s.embed_dim, "ffn_embed": list(s.ffn_dims),
            "heads_num": list(s.heads), "layer_num": s.num_layers, "slide_wsz": ["global"] * s.num_layers}


@pytest.fixture(scope="module")
def official():
    lh = _official()
    torch.manual_seed(0)
    random.seed(0)
    cfg = {"_name": "hubert_pruner", "pruner_supernet": "conf/small.yaml", "supernet_type": "small",
           "extractor_mode": "layer_norm", "conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2",
           "encoder_layers": 12, "encoder_embed_dim": 512, "encoder_ffn_embed_dim": 2048,
           "encoder_attention_heads": 8, "conv_pos": 16, "conv_pos_groups": 16, "teacher_embed_dim": 64,
           "layer_pred_num": ",".join(["0"] * 11 + ["1"])}
    model = lh.LightHuBERT(lh.LightHuBERTConfig(cfg)).eval()
    with torch.no_grad():  # non-trivial LayerNorms, biases and weight-norm magnitudes
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or name.endswith("weight_g"):
                p.add_(0.1 * torch.randn_like(p))
    return model, {"cfg": {"model": cfg}, "model": model.state_dict()}


def _subnets(config) -> list[Subnet]:
    g = torch.Generator().manual_seed(3)
    sampled = [config.search_space.sample(g) for _ in range(3)]
    mixed = Subnet(384, (4, 6, 8, 4, 6, 8, 4, 6, 8, 4), (1152, 1344, 1536, 1344, 1152, 1536, 1344, 1152, 1536, 1344))
    return [config.search_space.max(), config.search_space.min(), config.subnet, mixed] + sampled


def test_official_checkpoint_hidden_states_match(official):
    ref, ckpt = official
    config, state, dropped = convert_official(ckpt)
    assert dropped == ["layer_pred_heads.11.weight"]
    assert config.subnet == Subnet.uniform(384, 6, 4.0, 12)  # the released Small subnet
    model = LightHubertModel(config).eval()
    model.load_state_dict(state, strict=True)
    gen = torch.Generator().manual_seed(1)
    wavs = [torch.randn(7200, generator=gen), torch.randn(5000, generator=gen)]
    # the official s3prl expert normalises each waveform; each item runs alone through the official
    # model (its frame padding mask counts a frame with any valid sample as valid, so its padded
    # batches are not padding-invariant), speechssl's run batched
    worst = 0.0
    for subnet in _subnets(config):
        ref.set_sample_config(_official_subnet(subnet))
        with torch.no_grad():
            model.subnet = subnet
            model.hidden_sizes = [subnet.embed_dim] * (subnet.num_layers + 1)
            got = model(wavs)
        assert len(got["hidden_states"]) == subnet.num_layers + 1
        for i, length in enumerate(got["lengths"].tolist()):
            with torch.no_grad():
                w = wavs[i]
                expected, _ = ref.extract_features(torch.nn.functional.layer_norm(w, w.shape)[None], ret_hs=True)
            assert len(expected) == subnet.num_layers + 1 and expected[1].shape[1] == length
            expected = [h[0] for h in expected]
            # h_0: the official code returns the projected features, speechssl the encoder input; compare h_1..
            for layer in range(1, subnet.num_layers + 1):
                a, b = got["hidden_states"][layer][i, :length], expected[layer]
                diff = float((a - b).abs().max())
                worst = max(worst, diff)
                assert diff <= TOL, f"subnet {subnet}: item {i} layer {layer} differs by {diff:.2e}"
    print(f"max |diff| over subnets: {worst:.2e}")


def test_unknown_parameter_is_named(official):
    _, ckpt = official
    bad = {"cfg": ckpt["cfg"], "model": {**ckpt["model"], "encoder.extra.weight": torch.zeros(1)}}
    with pytest.raises(ValueError, match="encoder.extra.weight"):
        convert_official(bad)


def test_hub_reads_the_official_checkpoint(official, tmp_path):
    from speechssl import hub

    ref, ckpt = official
    path = tmp_path / "lighthubert_small.pt"
    torch.save(ckpt, path)
    model = hub.load(path, fmt="lighthubert")
    assert isinstance(model, LightHubertModel) and model.subnet == Subnet.uniform(384, 6, 4.0, 12)
    assert hub.info(path).format == "lighthubert"  # recognised before the generic fairseq layout
    auto = hub.load(path)
    assert isinstance(auto, LightHubertModel) and auto.subnet == model.subnet
    out_dir = hub.save(model, tmp_path / "converted")
    again = hub.load(out_dir)
    wav = [torch.randn(6000, generator=torch.Generator().manual_seed(2))]
    with torch.no_grad():
        assert torch.equal(again(wav)["last_hidden_state"], model(wav)["last_hidden_state"])
    # the official checkpoint's subnets as standalone upstreams: the supernet's hidden states exactly
    for spec in ("min", "embed=384,heads=4:6:8:4:6:8:4:6:8:4:6,ffn=3.5,layers=11"):
        sub = hub.load(path, subnet=spec)
        subnet = model.parse_subnet(spec)
        with torch.no_grad():
            model.subnet, model.hidden_sizes = subnet, [subnet.embed_dim] * (subnet.num_layers + 1)
            expected = model(wav)["hidden_states"]
            got = sub(wav)["hidden_states"]
        assert len(got) == subnet.num_layers + 1
        assert max(float((a - b).abs().max()) for a, b in zip(got, expected)) <= 1e-6, spec
