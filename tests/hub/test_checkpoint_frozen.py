"""Training checkpoints whose Task froze a module by reference (a teacher) stay loadable."""
from __future__ import annotations

import pytest
import torch

from speechssl._hub.checkpoint import read_training_checkpoint
from speechssl._hub.modeldir import HubError


def _ckpt(prefix: str, frozen: dict) -> dict:
    return {"model": {"student.w": torch.ones(2), "head.b": torch.zeros(1)},
            "upstream": {"method": "hubert", "config": {}, "prefix": prefix},
            "frozen": frozen, "num_updates": 3}


def test_a_teacher_outside_the_upstream_is_ignored(tmp_path):
    record = read_training_checkpoint(tmp_path / "c.pt", _ckpt("student", {
        "teacher": {"reference": "exp/hubert/model", "sha256": "ab" * 32}}))
    assert list(record.state_dict) == ["w"] and record.source["num_updates"] == 3


def test_a_teacher_inside_the_upstream_is_named(tmp_path):
    ckpt = _ckpt("", {"teacher": {"reference": "exp/hubert/model", "sha256": "ab" * 32}})
    with pytest.raises(HubError, match=r"c.pt: the upstream \(prefix ''\) contains frozen module 'teacher', "
                                       r"stored by reference \('exp/hubert/model'\)"):
        read_training_checkpoint(tmp_path / "c.pt", ckpt)
    with pytest.raises(HubError, match="'student.teacher'"):
        read_training_checkpoint(tmp_path / "c.pt", _ckpt("student", {"student.teacher": {"reference": "t"}}))


def test_an_ema_module_saved_in_the_checkpoint_is_not_refused(tmp_path):
    record = read_training_checkpoint(tmp_path / "c.pt", _ckpt("", {"student": {"reference": None}}))
    assert set(record.state_dict) == {"student.w", "head.b"}
