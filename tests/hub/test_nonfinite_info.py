"""hub info vouches for the tensors of a model directory; hub export refuses NaN weights (issue 23 item 5)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from speechssl import hub
from speechssl._hub.modeldir import HubError, read_meta
from speechssl.cli import main as cli
from speechssl.fingerprint import file_sha256


def _nan_dir(tmp_path: Path) -> Path:
    """A hub directory whose weights hold NaN, with a consistent sha256 (as an older writer left it)."""
    from speechssl.downstream.upstreams import load_upstream

    d = tmp_path / "model"
    hub.save(load_upstream("random:hubert@tiny").model, d)
    weights = d / "model.safetensors"
    state = load_file(str(weights))
    name = next(k for k in state if k.startswith("encoder.layers.0") and state[k].is_floating_point())
    state[name][0] = float("nan")
    save_file(state, str(weights))
    import json
    meta = read_meta(d)
    meta["sha256"] = file_sha256(weights)
    (d / "config.json").write_text(json.dumps(meta))
    return d


def test_info_flags_nan_weights_of_a_model_dir(tmp_path, capsys):
    d = _nan_dir(tmp_path)
    info = hub.info(d)
    assert info.verified is True and "NaN" in info.source["nonfinite"] and "encoder.layers.0" in info.source["nonfinite"]
    assert cli(["hub", "info", str(d)]) == 0
    out = capsys.readouterr().out
    assert "NOT FINITE" in out and "1 NaN" in out
    good = tmp_path / "good"
    from speechssl.downstream.upstreams import load_upstream
    hub.save(load_upstream("random:hubert@tiny").model, good)
    assert "nonfinite" not in hub.info(good).source


def test_export_refuses_nan_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEECHSSL_HOME", str(tmp_path / "home"))
    d = _nan_dir(tmp_path)
    with pytest.raises(HubError, match=r"refusing to write: tensor 'encoder\.layers\.0.*1 NaN"):
        hub.export(d, "bad")
    assert not (tmp_path / "home" / "models" / "bad").exists()
    assert torch.isnan(load_file(str(d / "model.safetensors"))[
        next(k for k in load_file(str(d / "model.safetensors")) if k.startswith("encoder.layers.0"))]).any()
