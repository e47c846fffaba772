"""Methods declare their modality; the hub, pretrain and the downstream runner dispatch on it."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from speechssl import hub
from speechssl.registry import _METHODS, INPUT_KINDS, Method, ModalityError, get_method, list_methods, register


@dataclass
class _PatchConfig:
    dim: int = 8
    patch: int = 4


class _PatchModel(nn.Module):
    """(B, 3, H, W) images → (B, H/p * W/p, D) patch embeddings (one layer)."""

    method = "test-modality-image"

    def __init__(self, config: _PatchConfig) -> None:
        super().__init__()
        self.config = config
        self.proj = nn.Conv2d(3, config.dim, config.patch, stride=config.patch)
        self.hidden_sizes = [config.dim]

    @classmethod
    def from_config(cls, config: _PatchConfig) -> "_PatchModel":
        return cls(config)

    def forward(self, images: torch.Tensor) -> dict:
        x = self.proj(images).flatten(2).transpose(1, 2)
        return {"hidden_states": [x], "last_hidden_state": x,
                "lengths": torch.full((x.shape[0],), x.shape[1], dtype=torch.long)}


@pytest.fixture
def image_method():
    spec = Method(name="test-modality-image", config_cls=_PatchConfig, model_cls=_PatchModel,
                  presets={"tiny": _PatchConfig}, modality="image", input_kind="image")
    register(spec)
    yield spec
    _METHODS.items.pop(spec.name, None)


def test_registered_methods_declare_known_modalities():
    for name in list_methods():
        spec = get_method(name)
        assert spec.input_kind in INPUT_KINDS
    assert get_method("hubert").modality == "audio" and get_method("hubert").input_kind == "waveform"


def test_method_rejects_inconsistent_declarations():
    with pytest.raises(ValueError, match="modality 'smell'"):
        Method(name="x", config_cls=_PatchConfig, model_cls=_PatchModel, modality="smell")
    with pytest.raises(ValueError, match="input_kind 'image' is image input, not audio"):
        Method(name="x", config_cls=_PatchConfig, model_cls=_PatchModel, input_kind="image")
    with pytest.raises(ValueError, match="task_cls and task_config_cls"):
        Method(name="x", config_cls=_PatchConfig, model_cls=_PatchModel, task_cls=object)


def test_downstream_runner_refuses_an_image_upstream(image_method, tmp_path):
    from speechssl.downstream.upstreams import load_upstream

    with pytest.raises(ModalityError, match=r"the downstream runner's audio tasks \(-u random:test-modality-image\) take audio methods; "
                                          r"'test-modality-image' is an image method"):
        load_upstream("random:test-modality-image@tiny")
    saved = hub.save(_PatchModel(_PatchConfig()), tmp_path / "img")
    with pytest.raises(ModalityError, match="image method"):
        load_upstream(str(saved))


def test_hub_saves_loads_and_describes_an_image_method(image_method, tmp_path):
    model = _PatchModel(_PatchConfig())
    saved = hub.save(model, tmp_path / "img")
    info = hub.info(saved)
    assert (info.modality, info.input_kind, info.downsample_rate) == ("image", "image", None)
    assert info.num_parameters == sum(p.numel() for p in model.parameters())
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(hub.load(saved)(x)["last_hidden_state"], model(x)["last_hidden_state"])
    audio = hub.info(hub.save(get_method("hubert").build(get_method("hubert").preset("tiny")), tmp_path / "hb"))
    assert (audio.modality, audio.downsample_rate) == ("audio", 320)


def test_hub_info_cli_prints_modality(image_method, tmp_path, capsys):
    from speechssl.cli import main

    saved = hub.save(_PatchModel(_PatchConfig()), tmp_path / "img")
    assert main(["hub", "info", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "modality:          image (input: image)" in out and "downsample rate" not in out


def test_pretrain_refuses_a_method_without_a_task(image_method, tmp_path, capsys):
    from speechssl.cli import main

    assert main(["pretrain", "--method", "test-modality-image", "--preset", "tiny",
                 "--exp-dir", str(tmp_path / "exp")]) != 0
    assert "has no pretraining task" in capsys.readouterr().err


def test_smallest_preset_is_declared_or_tiny():
    assert get_method("ssamba").smallest_preset == "nano"
    assert get_method("hubert").smallest_preset == "tiny"
    with pytest.raises(ValueError, match="smallest='huge' is not one of its presets"):
        Method(name="x", config_cls=_PatchConfig, model_cls=_PatchModel, presets={"tiny": _PatchConfig},
               smallest="huge")


def test_downstream_tasks_declare_a_modality_and_the_runner_matches_upstreams_to_it(image_method, tmp_path):
    from speechssl.downstream.upstreams import load_upstream
    from speechssl.registry import DownstreamTask, get_downstream

    assert get_downstream("ks").modality == "audio" and get_downstream("image_probe").modality == "image"
    with pytest.raises(ValueError, match="modality 'smell'"):
        DownstreamTask(name="x", task_cls=object, config_cls=object, metric="m", higher_is_better=True,
                       modality="smell")
    with pytest.raises(ValueError, match="-u fbank is an audio baseline; image tasks take -u pixels"):
        load_upstream("fbank", modality="image")
    with pytest.raises(ValueError, match="-u pixels is the image baseline; audio tasks take fbank"):
        load_upstream("pixels")
    pixels = load_upstream("pixels@8x3", modality="image")
    assert pixels.hidden_sizes == [192] and pixels.downsample_rate is None
    assert pixels.describe()["modality"] == "image" and "downsample_rate" not in pixels.describe()
    img = load_upstream("random:test-modality-image@tiny", modality="image")
    assert img.method == "test-modality-image" and img.downsample_rate is None
    with pytest.raises(ModalityError, match="image tasks .* take image methods; 'hubert' is an audio method"):
        load_upstream("random:hubert@tiny", modality="image")
    assert load_upstream("random:hubert@tiny").describe()["downsample_rate"] == 320
