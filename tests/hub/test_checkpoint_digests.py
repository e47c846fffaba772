"""The hub verifies a training checkpoint's tensor digests before it reports, loads or converts it.

A corrupted checkpoint must never become a model directory with a fresh, "verified" hash.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from speechssl import hub
from speechssl.cli import main as cli
from speechssl.train.checkpoint import save_checkpoint
from tests.hub import toy
from tests.train.corrupt import flip_bit_in_tensor


class _PretrainModule(nn.Module):
    def __init__(self, upstream: nn.Module):
        super().__init__()
        self.encoder = upstream
        self.head = nn.Linear(8, 5)


def _checkpoint(toy_model: nn.Module, path: Path, *, digests: bool = True) -> dict:
    module = _PretrainModule(toy_model)
    state = {"model": module.state_dict(), "num_updates": 7, "rng": [{"torch": torch.get_rng_state()}],
             "upstream": {"method": toy.NAME, "config": {"dim": 8, "num_layers": 2, "kernel": 40, "stride": 20},
                          "prefix": "encoder."}}
    if digests:
        save_checkpoint(state, path)
    else:
        torch.save(state, path)  # as written before digests existed
    return state


def _upstream_weight(state: dict) -> tuple[str, torch.Tensor]:
    return next((k, v) for k, v in state["model"].items()
                if k.startswith("encoder.") and v.is_floating_point() and v.numel() >= 8)


def test_intact_checkpoint_is_verified(tmp_path: Path, toy_model: nn.Module) -> None:
    path = tmp_path / "checkpoint_last.pt"
    _checkpoint(toy_model, path)
    assert hub.info(path).source["digests"] == "verified"
    out = hub.convert(path, tmp_path / "m")
    assert json.loads((out / "config.json").read_text())["source"]["digests"] == "verified"


def test_flipped_bit_refused_by_load_info_convert_and_cli(tmp_path: Path, toy_model: nn.Module,
                                                          capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "checkpoint_last.pt"
    state = _checkpoint(toy_model, path)
    name, weight = _upstream_weight(state)
    flip_bit_in_tensor(path, name, weight)
    pattern = rf"checkpoint_last.pt: tensor 'model/{name}' .*does not match its sha256 digest"
    for call in (lambda: hub.load(path), lambda: hub.info(path),
                 lambda: hub.convert(path, tmp_path / "converted"),
                 lambda: hub.export(path, "toy")):
        with pytest.raises(hub.HubError, match=pattern):
            call()
    assert not (tmp_path / "converted").exists()
    assert hub.list_models() == []
    for verb in (["hub", "info", str(path)], ["hub", "convert", str(path), str(tmp_path / "c2")]):
        assert cli(verb) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"tensor 'model/{name}'" in err and str(path) in err
        assert "weights_only" not in err and "Traceback" not in err
    assert not (tmp_path / "c2").exists()


def test_flipped_bit_outside_the_upstream_is_refused_too(tmp_path: Path, toy_model: nn.Module) -> None:
    path = tmp_path / "c.pt"
    state = _checkpoint(toy_model, path)
    flip_bit_in_tensor(path, "head.weight", state["model"]["head.weight"])
    with pytest.raises(hub.HubError, match=r"tensor 'model/head.weight'"):
        hub.convert(path, tmp_path / "m")


def test_replaced_tensor_refused(tmp_path: Path, toy_model: nn.Module) -> None:
    path = tmp_path / "c.pt"
    state = _checkpoint(toy_model, path)
    name, weight = _upstream_weight(state)
    saved = torch.load(path, weights_only=True)
    saved["model"][name] = torch.zeros_like(weight)  # digests left as they were
    torch.save(saved, path)
    with pytest.raises(hub.HubError, match=rf"tensor 'model/{name}'"):
        hub.info(path)


def test_old_checkpoint_without_digests_still_converts(tmp_path: Path, toy_model: nn.Module) -> None:
    path = tmp_path / "old.pt"
    _checkpoint(toy_model, path, digests=False)
    assert hub.info(path).source["digests"] == "none"
    out = hub.convert(path, tmp_path / "m")
    assert json.loads((out / "config.json").read_text())["source"]["digests"] == "none"


def test_no_verify_reads_a_corrupted_checkpoint(tmp_path: Path, toy_model: nn.Module) -> None:
    path = tmp_path / "c.pt"
    state = _checkpoint(toy_model, path)
    name, weight = _upstream_weight(state)
    flip_bit_in_tensor(path, name, weight)
    assert hub.info(path, verify=False).source["digests"] == "not checked"
