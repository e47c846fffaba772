"""EMA teacher: the update is m * teacher + (1 - m) * student exactly, buffers copied, and the cosine schedule."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from speechssl.nn.ema import cosine_momentum, ema_update_


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_ema_update_is_exact():
    teacher, student = _net(0), _net(1)
    student.train()(torch.randn(8, 3))  # moves the student's running statistics
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    m = 0.9937
    ema_update_(teacher, student, m)
    s_params = dict(student.named_parameters())
    for name, p in teacher.named_parameters():
        assert torch.equal(p, before[name] * m + s_params[name] * (1.0 - m)), name
        ref = before[name].double() * m + s_params[name].double() * (1 - m)
        torch.testing.assert_close(p.double(), ref, atol=1e-6, rtol=0)
    for name, b in student.named_buffers():
        assert torch.equal(dict(teacher.named_buffers())[name], b), name
    ema_update_(teacher, student, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(teacher.parameters(), student.parameters()))


def test_ema_update_refuses_mismatched_modules():
    with pytest.raises(ValueError, match="differ"):
        ema_update_(nn.Linear(3, 4), nn.Linear(3, 5), 0.5)


def test_cosine_momentum_schedule():
    assert cosine_momentum(0.99, 0, 100) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 50, 100) == pytest.approx(0.995)
    assert cosine_momentum(0.99, 100, 100) == pytest.approx(1.0)
    assert cosine_momentum(0.99, 250, 100) == pytest.approx(1.0)
    assert cosine_momentum(0.99, 25, 100) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2)
