"""speechssl.nn.diffusion: beta schedules against their closed forms, q_sample and timestep embeddings by hand."""
from __future__ import annotations

import math

import pytest
import torch

from speechssl.nn.diffusion import NoiseSchedule, TimestepEmbedding, beta_schedule, timestep_embedding


def _f(u: float) -> float:
    return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2


def test_cosine_alpha_bar_is_the_closed_form() -> None:
    T = 1000
    s = NoiseSchedule("cosine", T)
    # the product of (1 - beta) telescopes: alpha_bar_t = f((t + 1) / T) / f(0) wherever beta is not clipped
    expected = torch.tensor([_f((t + 1) / T) / _f(0.0) for t in range(T)], dtype=torch.float64)
    torch.testing.assert_close(s.alphas_cumprod[:-1], expected[:-1], rtol=1e-10, atol=1e-13)
    # f(1) = cos^2(pi/2) = 0, so the last beta would be 1: it is clipped to 0.999
    assert float(s.betas[-1]) == pytest.approx(0.999)
    assert float(s.alphas_cumprod[-1]) == pytest.approx(float(expected[-2]) * 0.001, rel=1e-9)
    assert float(s.alphas_cumprod[0]) == pytest.approx(0.99995, abs=2e-5)  # nearly no noise at the first step
    assert bool((s.betas[1:] >= s.betas[:-1]).all())  # betas grow


def test_cosine_betas_by_hand_for_four_steps() -> None:
    betas = beta_schedule("cosine", 4)
    by_hand = [min(1 - _f((t + 1) / 4) / _f(t / 4), 0.999) for t in range(4)]
    assert betas.dtype == torch.float64
    assert betas.tolist() == pytest.approx(by_hand, rel=1e-12)


def test_linear_schedule_by_hand() -> None:
    betas = beta_schedule("linear", 1000)
    assert float(betas[0]) == pytest.approx(1e-4) and float(betas[-1]) == pytest.approx(0.02)
    b50 = beta_schedule("linear", 50)  # scaled by 1000 / 50 = 20: 0.002 .. 0.4
    assert float(b50[0]) == pytest.approx(0.002) and float(b50[-1]) == pytest.approx(0.4)
    s = NoiseSchedule("linear", 50)
    prod = 1.0
    for t in range(50):
        prod *= 1 - (0.002 + (0.4 - 0.002) * t / 49)
        assert float(s.alphas_cumprod[t]) == pytest.approx(prod, rel=1e-9)
    with pytest.raises(ValueError, match="at least 21 steps"):
        beta_schedule("linear", 10)
    with pytest.raises(ValueError, match="beta schedule must be one of"):
        beta_schedule("quadratic", 10)


def test_q_sample_by_hand() -> None:
    s = NoiseSchedule("cosine", 10)
    x0 = torch.tensor([[1.0, -0.5], [0.25, 0.0]])  # (B=2, 2)
    eps = torch.tensor([[0.3, -1.2], [2.0, 0.7]])
    t = torch.tensor([0, 7])
    xt = s.q_sample(x0, t, eps)
    for b in range(2):
        abar = _f((int(t[b]) + 1) / 10) / _f(0.0)
        for j in range(2):
            by_hand = math.sqrt(abar) * float(x0[b, j]) + math.sqrt(1 - abar) * float(eps[b, j])
            assert float(xt[b, j]) == pytest.approx(by_hand, rel=1e-6, abs=1e-7)
    # 4-D inputs broadcast the per-row coefficients over every pixel
    img, noise = torch.ones(2, 3, 2, 2), torch.zeros(2, 3, 2, 2)
    a, _ = s.coefficients(t)
    torch.testing.assert_close(s.q_sample(img, t, noise), a.view(2, 1, 1, 1).expand(2, 3, 2, 2))
    with pytest.raises(ValueError, match=r"t must be in \[0, 10\)"):
        s.q_sample(x0, torch.tensor([0, 10]), eps)
    with pytest.raises(ValueError, match="noise"):
        s.q_sample(x0, t, eps[:1])


def test_schedule_coefficients_are_buffers_not_state() -> None:
    s = NoiseSchedule("cosine", 8)
    assert s.state_dict() == {}  # never in a checkpoint: rebuilt from (name, T)
    assert {n for n, _ in s.named_buffers()} == {"sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod"}
    torch.testing.assert_close(s.sqrt_alphas_cumprod ** 2 + s.sqrt_one_minus_alphas_cumprod ** 2, torch.ones(8))


def test_timestep_embedding_by_hand() -> None:
    emb = timestep_embedding(torch.tensor([0, 3]), 4)  # h = 2: frequencies 1 and 1 / 10000
    expected = torch.tensor([[0.0, 0.0, 1.0, 1.0],
                             [math.sin(3.0), math.sin(3e-4), math.cos(3.0), math.cos(3e-4)]])
    torch.testing.assert_close(emb, expected, rtol=1e-6, atol=1e-7)
    e8 = timestep_embedding(torch.tensor([5]), 8)  # h = 4: exp(-ln(1e4) k / 3)
    for k in range(4):
        w = 10000.0 ** (-k / 3)
        assert float(e8[0, k]) == pytest.approx(math.sin(5 * w), abs=1e-6)
        assert float(e8[0, 4 + k]) == pytest.approx(math.cos(5 * w), abs=1e-6)
    with pytest.raises(ValueError, match="even dim"):
        timestep_embedding(torch.tensor([1]), 5)


def test_timestep_embedding_mlp() -> None:
    torch.manual_seed(0)
    m = TimestepEmbedding(8, 16, 6)
    t = torch.tensor([0, 1, 999])
    by_hand = m.fc2(torch.nn.functional.silu(m.fc1(timestep_embedding(t, 8))))
    out = m(t)
    assert out.shape == (3, 6)
    torch.testing.assert_close(out, by_hand)
    assert not torch.allclose(out[0], out[1])  # neighbouring steps are told apart
