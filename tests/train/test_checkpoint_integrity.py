"""Training checkpoints verify themselves: a digest of every tensor payload, checked on load.

Corruptions: a flipped bit inside a tensor's bytes, a truncated file, a tensor replaced (other
values, same shape), a tensor dropped or added, a malformed digest entry. Each is refused with
one line naming the file (and the tensor); a checkpoint written before digests loads, logged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from speechssl.train import Trainer
from speechssl.train import checkpoint as ckpt
from tests.train.corrupt import flip_bit_in_tensor
from tests.train.test_trainer import tiny_cfg
from tests.train.tiny_task import TinyTask, TinyTaskConfig


def _state() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    return {
        "model": {"enc.weight": torch.randn(4, 3, generator=g), "enc.bias": torch.zeros(4),
                  "step": torch.tensor(3), "half": torch.randn(5, generator=g).to(torch.bfloat16)},
        "optimizer": {"state": {0: {"exp_avg": torch.randn(4, 3, generator=g)}}, "param_groups": [{"lr": 0.1}]},
        "rng": [{"torch": torch.get_rng_state()}],
        "num_updates": 3,
    }


def test_round_trip_verifies_and_state_is_not_modified(tmp_path: Path) -> None:
    state = _state()
    ckpt.save_checkpoint(state, tmp_path / "c.pt")
    assert ckpt.DIGESTS not in state
    loaded = ckpt.load_checkpoint(tmp_path / "c.pt")
    names = set(loaded[ckpt.DIGESTS]["tensors"])
    assert {"model/enc.weight", "model/half", "optimizer/state/0/exp_avg", "rng[0]/torch"} <= names
    assert ckpt.verify_digests(loaded, "c.pt") is True


def test_flipped_bit_is_refused_naming_file_and_tensor(tmp_path: Path) -> None:
    state = _state()
    path = tmp_path / "c.pt"
    ckpt.save_checkpoint(state, path)
    flip_bit_in_tensor(path, "model/enc.weight", state["model"]["enc.weight"])
    assert torch.load(path, weights_only=True)["num_updates"] == 3  # torch alone does not notice
    with pytest.raises(ckpt.CheckpointIntegrityError) as err:
        ckpt.load_checkpoint(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "'model/enc.weight'" in msg and "digest" in msg
    assert "weights_only" not in msg


def test_flipped_bit_in_optimizer_state_is_refused(tmp_path: Path) -> None:
    state = _state()
    path = tmp_path / "c.pt"
    ckpt.save_checkpoint(state, path)
    flip_bit_in_tensor(path, "exp_avg", state["optimizer"]["state"][0]["exp_avg"])
    with pytest.raises(ValueError, match=r"tensor 'optimizer/state/0/exp_avg' \(float32, shape \(4, 3\)\)"):
        ckpt.load_checkpoint(path)


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    ckpt.save_checkpoint(_state(), path)
    data = path.read_bytes()
    for cut in (len(data) // 3, len(data) - 30):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError) as err:
            ckpt.load_checkpoint(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def _resave(path: Path, edit) -> None:
    """Load (without verifying), edit, and save the dict as it is (its old digests kept)."""
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


@pytest.mark.parametrize("edit, match", [
    (lambda s: s["model"].__setitem__("enc.bias", torch.ones(4)), r"tensor 'model/enc.bias' \(float32"),
    (lambda s: s["model"].__setitem__("enc.bias", torch.zeros(2, 2)), r"tensor 'model/enc.bias' .*shape \(2, 2\)"),
    (lambda s: s["model"].__setitem__("enc.bias", torch.zeros(4, dtype=torch.float64)), "'model/enc.bias'"),
    (lambda s: s["model"].update({"enc.weight": s["model"]["enc.weight"].t().contiguous().t()}), None),
    (lambda s: s["model"].pop("step"), r"tensor 'model/step' is listed in the checkpoint's digests but missing"),
    (lambda s: s["model"].__setitem__("extra", torch.zeros(1)), r"tensor 'model/extra' has no digest"),
    (lambda s: s.__setitem__(ckpt.DIGESTS, {"algorithm": "md5", "tensors": {}}), r"malformed 'digests' entry"),
    (lambda s: s.__setitem__(ckpt.DIGESTS, [1, 2]), r"malformed 'digests' entry"),
])
def test_replaced_dropped_or_added_tensors(tmp_path: Path, edit, match) -> None:
    path = tmp_path / "c.pt"
    ckpt.save_checkpoint(_state(), path)
    _resave(path, edit)
    if match is None:  # the same values in another memory layout are the same payload
        ckpt.load_checkpoint(path)
        return
    with pytest.raises(ckpt.CheckpointIntegrityError, match=match) as err:
        ckpt.load_checkpoint(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_old_checkpoint_without_digests_loads_with_a_log_line(tmp_path: Path, speechssl_logs) -> None:
    path = tmp_path / "old.pt"
    torch.save(_state(), path)  # what speechssl wrote before digests
    state = ckpt.load_checkpoint(path)
    assert state["num_updates"] == 3
    assert any("no tensor digests" in r.getMessage() and str(path) in r.getMessage() for r in speechssl_logs.records)


def test_verify_false_skips_with_a_warning(tmp_path: Path, speechssl_logs) -> None:
    path = tmp_path / "c.pt"
    ckpt.save_checkpoint(_state(), path)
    _resave(path, lambda s: s["model"].__setitem__("enc.bias", torch.ones(4)))
    assert ckpt.load_checkpoint(path, verify=False)["num_updates"] == 3
    assert any("without verifying" in r.getMessage() for r in speechssl_logs.records)


def test_trainer_checkpoints_carry_digests_and_resume_refuses_a_flipped_bit(tiny_data, tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    Trainer(TinyTask(TinyTaskConfig(data=str(tiny_data))), tiny_cfg(max_updates=2, save_every_updates=2,
                                                                   keep_last=0), exp).fit()
    last = exp / ckpt.LAST
    state = ckpt.load_checkpoint(last)
    assert any(k.startswith("model/") for k in state[ckpt.DIGESTS]["tensors"])
    assert any(k.startswith("optimizer/") for k in state[ckpt.DIGESTS]["tensors"])
    assert ckpt.numbered_checkpoints(exp) == []  # keep_last=0: nothing to fall back to
    name, weight = next((k, v) for k, v in state["model"].items() if v.numel() > 16)
    flip_bit_in_tensor(last, name, weight)
    config_before = (exp / "config.yaml").read_bytes()
    resumed = Trainer(TinyTask(TinyTaskConfig(data=str(tiny_data))), tiny_cfg(max_updates=4, save_every_updates=2,
                                                                            keep_last=0), exp)
    with pytest.raises(ckpt.CheckpointIntegrityError, match=rf"checkpoint_last.pt: tensor 'model/{name}'"):
        resumed.fit()
    assert (exp / "config.yaml").read_bytes() == config_before
