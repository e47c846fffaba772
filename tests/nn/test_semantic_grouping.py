"""Semantic grouping: prototype scores, slot pooling and the grouping loss against hand computations."""
from __future__ import annotations

import math

import pytest
import torch

from speechssl.nn.semantic_grouping import (
    active_slots, argmax_masks, grouping_loss, prototype_scores, score_center, slot_pool,
)


def test_prototype_scores_are_cosines():
    feats = torch.tensor([[3.0, 0.0], [4.0, 2.0]]).reshape(1, 2, 1, 2)  # (B, D, H, W): pixels (3, 4) and (0, 2)
    protos = torch.tensor([[1.0, 0.0], [0.0, 5.0]])
    s = prototype_scores(feats, protos)
    assert s.shape == (1, 2, 1, 2)
    torch.testing.assert_close(s[0, :, 0, 0], torch.tensor([3 / 5, 4 / 5]))
    torch.testing.assert_close(s[0, :, 0, 1], torch.tensor([0.0, 1.0]))
    assert argmax_masks(s).tolist() == [[[1, 1]]]
    assert active_slots(s).tolist() == [[False, True]]


def test_slot_pool_by_hand():
    # two pixels with features a = (1, 2), b = (3, -1); scores of 2 prototypes
    feats = torch.tensor([[1.0, 3.0], [2.0, -1.0]]).reshape(1, 2, 1, 2)
    scores = torch.tensor([[0.5, -0.2], [0.1, 0.3]]).reshape(1, 2, 1, 2)  # (B, K, H, W): proto k, pixel p
    tau, eps = 0.5, 1e-6
    # softmax over prototypes per pixel, + eps, normalised over pixels per prototype
    attn = []
    for p in range(2):
        e = [math.exp(float(scores[0, k, 0, p]) / tau) for k in range(2)]
        attn.append([v / sum(e) + eps for v in e])  # attn[p][k]
    expected = []
    for k in range(2):
        z = attn[0][k] + attn[1][k]
        expected.append([(attn[0][k] * float(feats[0, d, 0, 0]) + attn[1][k] * float(feats[0, d, 0, 1])) / z
                         for d in range(2)])
    got = slot_pool(feats, scores, tau, eps)
    torch.testing.assert_close(got[0], torch.tensor(expected), atol=1e-6, rtol=1e-6)


def test_grouping_loss_by_hand():
    q = torch.tensor([[0.2, -0.1, 0.4], [0.0, 0.3, -0.5]])  # student scores of 2 pixels, 3 prototypes
    t = torch.tensor([[0.1, 0.6, -0.2], [0.5, 0.5, 0.0]])  # teacher scores of the same points
    c = torch.tensor([0.05, -0.05, 0.1])
    ts, tt = 0.1, 0.07

    def ce(qr, tr):
        lq = [x / ts for x in qr]
        lse = math.log(sum(math.exp(v) for v in lq))
        pt = [math.exp((x - ci) / tt) for x, ci in zip(tr, c.tolist())]
        pt = [v / sum(pt) for v in pt]
        return -sum(p * (v - lse) for p, v in zip(pt, lq))

    rows = [ce(q[i].tolist(), t[i].tolist()) for i in range(2)]
    assert float(grouping_loss(q, t, c, ts, tt)) == pytest.approx(sum(rows) / 2, rel=1e-5)
    keep = torch.tensor([False, True])
    assert float(grouping_loss(q, t, c, ts, tt, keep)) == pytest.approx(rows[1], rel=1e-5)
    # no gradient flows into the teacher's side
    tg = t.clone().requires_grad_(True)
    qg = q.clone().requires_grad_(True)
    grouping_loss(qg, tg, c, ts, tt).backward()
    assert tg.grad is None or float(tg.grad.abs().sum()) == 0.0
    assert float(qg.grad.abs().sum()) > 0


def test_score_center_is_the_pixel_mean():
    s = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(score_center(s), s.permute(1, 0, 2, 3).reshape(3, -1).mean(1))
