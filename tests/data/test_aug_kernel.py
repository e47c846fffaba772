"""Augmentation kernel: closed forms (identity, a constant map, shifts on the cyclic group), Monte-Carlo
convergence with deterministic seeds, label scores, and the image estimator's limits."""
from __future__ import annotations

import math

import pytest
import torch

from speechssl.data.aug_kernel import (analyse, augmentation_kernel, augmentation_spectrum, estimate_assignments,
                                       label_fit, median_bandwidth, predict, soft_assign, view_features)


def _cyclic(n: int, shifts: list[int], probs: list[float]) -> torch.Tensor:
    """P[i, (i + s) mod n] = p_s: the augmentation x -> x + s on Z_n."""
    p = torch.zeros(n, n, dtype=torch.float64)
    for s, q in zip(shifts, probs):
        for i in range(n):
            p[i, (i + s) % n] += q
    return p


def _cyclic_eigenvalues(n: int, shifts: list[int], probs: list[float]) -> torch.Tensor:
    """|φ̂(k)|², φ̂(k) = Σ_s p_s e^{-2πiks/n}: T = B Bᵀ with B circulant, sorted descending."""
    lam = []
    for k in range(n):
        re = sum(q * math.cos(2 * math.pi * k * s / n) for s, q in zip(shifts, probs))
        im = sum(q * math.sin(2 * math.pi * k * s / n) for s, q in zip(shifts, probs))
        lam.append(re * re + im * im)
    return torch.tensor(sorted(lam, reverse=True), dtype=torch.float64)


def test_identity_augmentation_has_the_identity_operator():
    n = 7
    spec = augmentation_spectrum(augmentation_kernel(torch.eye(n)))
    assert torch.allclose(spec.eigenvalues, torch.ones(n, dtype=torch.float64))
    assert spec.kappa ** 2 == pytest.approx(n) and spec.trace == pytest.approx(n)
    assert spec.effective_dim == pytest.approx(n)


def test_constant_augmentation_keeps_only_the_constant():
    n = 5
    row = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    spec = augmentation_spectrum(augmentation_kernel(row.expand(n, 3)))
    assert spec.eigenvalues[0] == pytest.approx(1.0)
    assert torch.allclose(spec.eigenvalues[1:], torch.zeros(n - 1, dtype=torch.float64), atol=1e-12)
    assert spec.kappa == pytest.approx(1.0) and spec.trace == pytest.approx(1.0)
    assert torch.allclose(spec.eigenvectors[:, 0].abs(), torch.full((n,), 1 / math.sqrt(n), dtype=torch.float64))


def test_cyclic_group_shifts_match_the_closed_form():
    n, shifts, probs = 12, [0, 1, 2], [0.5, 0.3, 0.2]
    spec = augmentation_spectrum(augmentation_kernel(_cyclic(n, shifts, probs)))
    assert torch.allclose(spec.eigenvalues, _cyclic_eigenvalues(n, shifts, probs), atol=1e-12)
    expected_k2 = n * sum(q * q for q in probs)  # k_X(x, x) = Σ_a p(a|x)² / p(a), p(a) = 1/n
    assert spec.kappa ** 2 == pytest.approx(expected_k2) and spec.trace == pytest.approx(expected_k2)
    assert spec.trace == pytest.approx(float(spec.eigenvalues.sum()))  # trace = Σ λ (Parseval)
    # the parity label is the Fourier mode k = n/2: its invariance is |Σ_s p_s (-1)^s|²
    labels = torch.arange(n) % 2
    fit = label_fit(spec, labels, dim=n, num_labelled=n)
    assert fit.invariance == pytest.approx((0.5 - 0.3 + 0.2) ** 2)
    lam_half = (0.5 - 0.3 + 0.2) ** 2
    rank = int((spec.eigenvalues > lam_half + 1e-9).sum())  # eigenvalues above the mode's
    assert label_fit(spec, labels, dim=rank + 1, num_labelled=n).captured == pytest.approx(1.0)
    assert label_fit(spec, labels, dim=rank, num_labelled=n).captured == pytest.approx(0.0, abs=1e-12)
    assert fit.estimation_term == pytest.approx(expected_k2)  # κ² d / n with d = n


def test_operator_is_markov_for_any_assignment():
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(9, 5, generator=gen, dtype=torch.float64)
    p = p / p.sum(1, keepdim=True)
    k = augmentation_kernel(p)
    assert torch.allclose(k, k.T)
    assert torch.allclose(k.mean(1), torch.ones(9, dtype=torch.float64))  # T 1 = 1
    spec = augmentation_spectrum(k)
    assert spec.eigenvalues[0] == pytest.approx(1.0)
    assert float(spec.eigenvalues.min()) > -1e-12 and float(spec.eigenvalues.max()) < 1 + 1e-12
    with pytest.raises(ValueError, match="probability distributions"):
        augmentation_kernel(p * 2)


def test_monte_carlo_estimate_converges_to_the_closed_form():
    n, shifts, probs = 10, [0, 1, 3], [0.5, 0.3, 0.2]
    exact = _cyclic_eigenvalues(n, shifts, probs)
    errors = []
    for m in (20, 200, 2000):
        gen = torch.Generator().manual_seed(1)
        draws = torch.multinomial(torch.tensor(probs), n * m, replacement=True, generator=gen).view(n, m)
        cols = (torch.arange(n).view(n, 1) + torch.tensor(shifts)[draws]) % n  # (n, m) shifted points
        p = torch.zeros(n, n, dtype=torch.float64).scatter_add_(1, cols, torch.full((n, m), 1.0 / m,
                                                                                     dtype=torch.float64))
        spec = augmentation_spectrum(augmentation_kernel(p))
        errors.append(float((spec.eigenvalues - exact).abs().max()))
    assert errors[2] < errors[1] < errors[0]
    assert errors[2] < 0.03


def _shift(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    dx = int(torch.randint(-2, 3, (), generator=generator))
    return torch.roll(image, dx, dims=2)


def test_image_estimator_limits_and_convergence():
    gen = torch.Generator().manual_seed(3)
    images = [torch.rand(3, 8, 8, generator=gen) for _ in range(6)]
    anchors = view_features(torch.stack(images), 8)
    h = median_bandwidth(anchors, 0.05)  # cells much narrower than the distances between images
    p = estimate_assignments(images, lambda x, g: x, 3, anchors, h, 8, background=None)
    assert torch.allclose(p, torch.eye(6, dtype=torch.float64), atol=1e-9)  # identity: each image its own cell
    p = estimate_assignments(images, lambda x, g: torch.zeros_like(x), 3, anchors, h, 8)
    spec = augmentation_spectrum(augmentation_kernel(p))
    assert spec.kappa == pytest.approx(1.0) and float(spec.eigenvalues[1]) == pytest.approx(0.0, abs=1e-9)
    # a real augmentation: two seeds' estimates agree better with more views
    anchors = view_features(torch.stack(images), 4)
    h = median_bandwidth(anchors, 0.5)
    gaps = []
    for m in (4, 256):
        a = estimate_assignments(images, _shift, m, anchors, h, 4, seed=0)
        b = estimate_assignments(images, _shift, m, anchors, h, 4, seed=1)
        assert torch.allclose(a.sum(1), torch.ones(6, dtype=torch.float64))
        gaps.append(float((a - b).abs().max()))
    assert gaps[1] < gaps[0] / 3
    assert torch.equal(estimate_assignments(images, _shift, 5, anchors, h, 4, seed=2),
                       estimate_assignments(images, _shift, 5, anchors, h, 4, seed=2))


def test_background_cell_takes_far_views():
    anchors = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    views = torch.tensor([[0.0, 0.0], [50.0, 50.0]], dtype=torch.float64)
    p = soft_assign(views, anchors, bandwidth=0.5, background=2.0)
    assert p.shape == (2, 3) and torch.allclose(p.sum(1), torch.ones(2, dtype=torch.float64))
    w = torch.tensor([1.0, math.exp(-1 / (2 * 0.25)), math.exp(-2.0)], dtype=torch.float64)
    assert torch.allclose(p[0], w / w.sum())
    assert float(p[1, 2]) == pytest.approx(1.0)  # far from both anchors: background
    assert float(soft_assign(views, anchors, 0.5, background=None)[1, 1]) == pytest.approx(1.0)  # nearest, however far


def test_analyse_and_predict_rank_by_the_bound():
    n = 12
    labels = {"parity": torch.arange(n) % 2}
    weak = analyse("weak", torch.eye(n, dtype=torch.float64), labels, dim=4, num_labelled=n)
    # shifts by an even amount keep the parity, so it stays fully in the top eigenspace, with a lower κ
    even = analyse("even", _cyclic(n, [0, 2], [0.5, 0.5]), labels, dim=4, num_labelled=n)
    assert weak.kappa ** 2 == pytest.approx(12) and even.kappa ** 2 == pytest.approx(6)
    assert even.labels["parity"].invariance == pytest.approx(1.0)
    assert predict([weak, even], "parity") == "even"
    d = even.as_dict()
    assert d["kappa2"] == pytest.approx(6) and d["labels"]["parity"]["bound"] == pytest.approx(
        even.labels["parity"].bound)
    with pytest.raises(ValueError, match="single class"):
        label_fit(augmentation_spectrum(augmentation_kernel(torch.eye(3))), torch.zeros(3), 1, 3)
    with pytest.raises(ValueError, match="dim must be in"):
        label_fit(augmentation_spectrum(augmentation_kernel(torch.eye(3))), torch.arange(3), 4, 3)
