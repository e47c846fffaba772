"""wav2vec 2.0 contrastive loss with in-utterance distractors: against a loop, and the sampler's rules."""
from __future__ import annotations

import math

import torch

from speechssl.nn.contrastive import contrastive_loss, sample_negatives


def _mask() -> torch.Tensor:
    mask = torch.zeros(3, 9, dtype=torch.bool)
    mask[0, 1:6] = True
    mask[1, [0, 4, 8]] = True
    mask[2, 3] = True  # a single masked frame
    return mask


def test_sample_negatives_same_utterance_masked_not_self() -> None:
    mask = _mask()
    gen = torch.Generator().manual_seed(0)
    neg = sample_negatives(mask, 50, gen)
    assert neg.shape == (3, 9, 50) and neg.dtype == torch.int64
    B, T = mask.shape
    for b in range(B):
        for t in range(T):
            if not mask[b, t]:
                assert int(neg[b, t].abs().sum()) == 0
                continue
            rows, cols = neg[b, t] // T, neg[b, t] % T
            assert bool((rows == b).all()) and bool(mask[b, cols].all())
            if int(mask[b].sum()) > 1:
                assert bool((cols != t).all())
    # uniform over the other 4 masked frames of utterance 0
    counts = torch.bincount(sample_negatives(mask, 4000, gen)[0, 3] % T, minlength=T)
    assert counts[3] == 0 and int(counts[[1, 2, 4, 5]].min()) > 850
    again = sample_negatives(mask, 50, torch.Generator().manual_seed(0))
    assert torch.equal(neg, again)


def test_contrastive_loss_equals_a_loop() -> None:
    torch.manual_seed(0)
    mask = _mask()
    B, T, E, K, temp = 3, 9, 6, 4, 0.1
    pred, targ = torch.randn(B, T, E), torch.randn(B, T, E)
    targ[1, 4] = targ[1, 8]  # a distractor equal to the target is excluded
    neg = sample_negatives(mask, K, torch.Generator().manual_seed(1))
    got = contrastive_loss(pred, targ, neg, mask, temp)
    flat = targ.reshape(B * T, E)
    total, correct = 0.0, 0
    for b in range(B):
        for t in range(T):
            if not mask[b, t]:
                continue
            cands = [targ[b, t]] + [flat[i] for i in neg[b, t].tolist()]
            logits = []
            for k, c in enumerate(cands):
                same = k > 0 and bool(torch.equal(c, targ[b, t]))
                cos = float(torch.dot(pred[b, t], c) / (pred[b, t].norm() * c.norm()))
                logits.append(-math.inf if same else cos / temp)
            m = max(logits)
            lse = m + math.log(sum(math.exp(v - m) for v in logits))
            total += lse - logits[0]
            correct += int(logits[0] >= max(logits[1:]))
    assert got.count == int(mask.sum())
    assert abs(float(got.loss) - total) < 1e-4 * max(1.0, total)
    assert int(got.correct) == correct
    # the single-masked-frame utterance only sees itself: its term is exactly 0
    only = torch.zeros_like(mask)
    only[2, 3] = True
    assert float(contrastive_loss(pred, targ, neg, only, temp).loss) == 0.0
