"""hubconf.py: torch.hub.load(repo_dir, "hubert", ckpt=..., source="local") as s3prl users expect."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from speechssl import hub
from speechssl.upstream.hubert.model import HubertModel
from speechssl.upstream.wav2vec2.model import Wav2Vec2Model
from tests.convert.conftest import max_diff, random_model
from tests.convert.fairseq_layout import hubert_checkpoint
from tests.hub import toy

REPO = str(Path(__file__).resolve().parents[2])


def _hub_load(entry: str, **kwargs):
    return torch.hub.load(REPO, entry, source="local", trust_repo=True, **kwargs)


@pytest.fixture
def wavs() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(4)
    return [torch.randn(1200, generator=gen), torch.randn(900, generator=gen)]


def test_entry_points_listed() -> None:
    """What torch.hub.list / help show (they only take GitHub repos, so read hubconf as they do)."""
    toy.ensure_registered()
    spec = importlib.util.spec_from_file_location("hubconf_under_test", Path(REPO) / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entries = {f for f in dir(module) if callable(getattr(module, f)) and not f.startswith("_")}
    from speechssl.registry import list_methods

    # every registered method a Python name can spell (tests may register others, e.g. "tiny-mfp-test")
    assert entries == {"load", *(m for m in list_methods() if m.isidentifier())}
    assert {"hubert", "wav2vec2", toy.NAME} <= entries
    assert "ckpt" in module.hubert.__doc__ and module.hubert.__name__ == "hubert"
    assert set(module.dependencies) >= {"torch", "safetensors"}


def test_load_by_path_name_and_fairseq(tmp_path: Path, wavs: list[torch.Tensor]) -> None:
    model = random_model(HubertModel)
    model_dir = hub.save(model, tmp_path / "hubert_dir")
    by_path = _hub_load("hubert", ckpt=str(model_dir))
    assert type(by_path) is HubertModel and not by_path.training
    assert max_diff(model, by_path, wavs) == 0.0
    hub.export(model_dir, "my-hubert")
    assert max_diff(model, _hub_load("hubert", ckpt="my-hubert"), wavs) == 0.0
    assert max_diff(model, _hub_load("load", ckpt="my-hubert"), wavs) == 0.0
    torch.save(hubert_checkpoint(model), tmp_path / "fairseq.pt")
    assert max_diff(model, _hub_load("hubert", ckpt=str(tmp_path / "fairseq.pt")), wavs) <= 1e-4


def test_method_mismatch_and_arguments(tmp_path: Path) -> None:
    model_dir = hub.save(random_model(HubertModel), tmp_path / "h")
    with pytest.raises(ValueError, match="holds a 'hubert' model, not 'wav2vec2'"):
        _hub_load("wav2vec2", ckpt=str(model_dir))
    with pytest.raises(ValueError, match="exactly one of ckpt= .* or preset="):
        _hub_load("hubert")
    with pytest.raises(TypeError, match="unexpected argument"):
        _hub_load("load", ckpt=str(model_dir), refresh=True)
    fresh = _hub_load("wav2vec2", preset="tiny")
    assert type(fresh) is Wav2Vec2Model and fresh.config.encoder_layers == 4
