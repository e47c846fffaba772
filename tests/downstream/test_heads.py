"""Heads ignore padding: the same utterances padded differently give the same outputs."""
from __future__ import annotations

import torch

from speechssl.downstream.heads import XVector


def test_xvector_ignores_padding_in_training_and_evaluation():
    torch.manual_seed(0)
    head = XVector(6, channels=8, pool_dim=12, embed_dim=4)
    x = torch.randn(3, 20, 6)
    lengths = torch.tensor([20, 11, 7])
    padded = torch.cat([x, torch.randn(3, 15, 6) * 50], dim=1)     # more (and loud) padding
    padded[1, 11:] = 30.0
    for mode in (head.train, head.eval):
        mode()
        torch.manual_seed(1)
        a = head(x, lengths)["embedding"]
        torch.manual_seed(1)
        b = head(padded, lengths)["embedding"]
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
