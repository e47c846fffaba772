"""Downstream metrics against hand-worked cases and independent oracles (jiwer, sklearn)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from speechssl.downstream import metrics as M


def test_accuracy_and_errors():
    assert M.accuracy([1, 2, 3, 4], [1, 2, 0, 4]) == 0.75
    with pytest.raises(ValueError, match="3 predictions but 2 targets"):
        M.accuracy([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="no targets"):
        M.accuracy([], [])


def test_wer_cer_hand_case_and_jiwer():
    jiwer = pytest.importorskip("jiwer")
    # "a b c" vs "a x c d": one substitution and one deletion of the reference's "d" → 2/4
    assert M.wer(["a b c"], ["a x c d"]) == pytest.approx(0.5)
    hyps = ["the cat sat", "on a mat", "hello world", ""]
    refs = ["the cat sat down", "on the mat", "hello", "so it goes"]
    assert M.wer(hyps, refs) == pytest.approx((1 + 1 + 1 + 3) / (4 + 3 + 1 + 3))
    assert M.wer(hyps[:3], refs[:3]) == pytest.approx(jiwer.wer(refs[:3], hyps[:3]))
    assert M.cer(hyps[:3], refs[:3]) == pytest.approx(jiwer.cer(refs[:3], hyps[:3]))
    # PER: tokens are phones
    assert M.error_rate([["p", "a"]], [["p", "a", "t"]]) == pytest.approx(1 / 3)
    # no reference token at all: the inserted tokens count (jiwer's convention, metrics.rate)
    assert M.error_rate([["a"]], [[]]) == 1.0


def test_eer_hand_cases():
    assert M.eer([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == (0.5, 0.8)    # FAR = FRR = 1/2 at 0.8
    assert M.eer([0.9, 0.7, 0.6, 0.2], [1, 1, 0, 0])[0] == 0.0        # separable
    assert M.eer([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0])[0] == 1.0        # inverted
    # ROC points (FAR, FRR): (0,1) (0,.5) (1,.5) (1,0): crossing at 0.5, halfway from 3 to 2
    rate, thr = M.eer([3.0, 2.0, 1.0], [1, 0, 1])
    assert rate == pytest.approx(0.5) and thr == pytest.approx(2.5)
    # 3 targets, 2 non-targets: FAR stays 1/2 while FRR falls 2/3 → 1/3 (scores 0.8 → 0.5)
    rate, thr = M.eer([0.9, 0.8, 0.5, 0.4, 0.3], [1, 0, 1, 1, 0])
    assert rate == pytest.approx(0.5) and thr == pytest.approx(0.65)
    # a tie moves both rates at once: (0, 1/2) → (1/2, 0), crossing at 1/4
    assert M.eer([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0])[0] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="target and non-target"):
        M.eer([0.1, 0.2], [1, 1])


def test_eer_matches_sklearn_roc_brentq():
    sk = pytest.importorskip("sklearn.metrics")
    from scipy.interpolate import interp1d
    from scipy.optimize import brentq

    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(20, 300))
        labels = rng.integers(0, 2, n)
        labels[:2] = [0, 1]
        scores = rng.normal(size=n) + labels * rng.uniform(0, 3)
        if trial % 3 == 0:
            scores = np.round(scores, 1)  # ties
        fpr, tpr, _ = sk.roc_curve(labels, scores)
        oracle = brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)
        assert M.eer(scores, labels)[0] == pytest.approx(oracle, abs=1e-9)


def _der_bruteforce(ref, hyp):
    """Slow reference: try every speaker mapping (hyp padded with silent speakers)."""
    ref, hyp = ref.astype(bool), hyp.astype(bool)
    s = max(ref.shape[1], hyp.shape[1])
    ref = np.pad(ref, ((0, 0), (0, s - ref.shape[1])))
    hyp = np.pad(hyp, ((0, 0), (0, s - hyp.shape[1])))
    best = None
    for perm in itertools.permutations(range(s)):
        h = hyp[:, perm]
        n_ref, n_sys = ref.sum(1), h.sum(1)
        n_map = (ref & h).sum(1)
        err = np.maximum(n_ref - n_sys, 0) + np.maximum(n_sys - n_ref, 0) + np.minimum(n_ref, n_sys) - n_map
        best = err.sum() if best is None else min(best, err.sum())
    return best / ref.sum()


def test_der_hand_case():
    # A speaks frames 0-5, B frames 4-9 (overlap at 4, 5); the system's columns are swapped.
    ref = np.zeros((10, 2), int)
    ref[0:6, 0] = 1
    ref[4:10, 1] = 1
    hyp = np.zeros((10, 2), int)
    hyp[0:5, 1] = 1          # A, but misses frame 5 → 1 miss
    hyp[6:10, 0] = 1         # B, misses 4 and 5 → 2 misses
    hyp[2, 0] = 1            # B talking at 2 where only A talks → 1 false alarm
    stats = M.der(ref, hyp)
    assert stats["speech"] == 12
    assert (stats["miss"], stats["false_alarm"], stats["confusion"]) == (3, 1, 0)
    assert stats.der == pytest.approx(4 / 12)
    # Speaker confusion: system labels frames 0-1 with B's column.
    hyp2 = np.zeros((10, 2), int)
    hyp2[2:6, 1] = 1
    hyp2[0:2, 0] = 1
    hyp2[4:10, 0] = 1
    s2 = M.der(ref, hyp2)
    assert (s2["miss"], s2["false_alarm"], s2["confusion"]) == (0, 0, 2)
    # skip_overlap drops frames 4, 5; collar 1 drops frames around the boundaries at 0 (A starts),
    # 4, 6 and 10 (B ends with the recording): NIST / pyannote.metrics
    assert M.der(ref, hyp, skip_overlap=True)["frames"] == 8
    assert M.der(ref, hyp, collar=1)["frames"] == 4
    assert M.der(ref, ref).der == 0.0


def test_der_matches_bruteforce_mapping():
    rng = np.random.default_rng(1)
    for _ in range(30):
        t, sr, sh = int(rng.integers(5, 40)), int(rng.integers(1, 4)), int(rng.integers(1, 4))
        ref = rng.random((t, sr)) < 0.4
        ref[0, 0] = True
        hyp = rng.random((t, sh)) < 0.4
        assert M.der(ref, hyp).der == pytest.approx(_der_bruteforce(ref, hyp))


def test_slot_metrics_hand_cases():
    ref = "play B-artist the beatles E-artist in the B-room kitchen E-room"
    assert M.parse_slots(ref) == [("artist", "the beatles"), ("room", "kitchen")]
    assert M.slot_type_f1([ref], [ref]) == 1.0 and M.slot_value_cer([ref], [ref]) == 0.0
    hyp = "play B-artist the beetles E-artist in the kitchen"     # room slot not found
    # types: hyp {artist}, ref {artist, room}: P=1, R=1/2 → F1=2/3
    assert M.slot_type_f1([hyp], [ref]) == pytest.approx(2 / 3)
    # values: "the beetles" vs "the beatles" (1 edit), "" vs "kitchen" (7 edits) over 11 + 7 chars
    assert M.slot_value_cer([hyp], [ref]) == pytest.approx(8 / 18)
    # no slots in either → F1 1; predicted slot where none exist → 0
    assert M.slot_type_f1(["hello", "B-x a E-x"], ["hello", "hi"]) == pytest.approx(0.5)
    # best of several hypothesis values of the same type is used
    assert M.slot_value_cer(["B-a xx E-a B-a abc E-a"], ["B-a abd E-a"]) == pytest.approx(1 / 3)


def test_average_precision_and_map_hand_and_sklearn():
    # relevant at ranks 1 and 3: AP = (1/1 + 2/3) / 2
    assert M.average_precision(np.array([0.9, 0.8, 0.7, 0.1]), np.array([1, 0, 1, 0])) == pytest.approx(5 / 6)
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(6, 25))
    rel = rng.random((6, 25)) < 0.2
    rel[:, 0] = True
    rel[5] = False   # a query without relevant documents is skipped
    expect = np.mean([sk.average_precision_score(rel[q], scores[q]) for q in range(5)])
    assert M.mean_average_precision(scores, rel) == pytest.approx(expect)


def test_mtwv_hand_case():
    beta = 2.0
    # q0: docs relevant [1,0,0]; q1: [0,1,0]
    scores = np.array([[0.9, 0.5, 0.1], [0.8, 0.7, 0.2]])
    rel = np.array([[1, 0, 0], [0, 1, 0]])
    # θ=0.9: q0 hit → TWV = 1 - mean(0+0, 1+0) = 0.5
    # θ=0.8: q1 FA (P_fa 1/2) → 1 - mean(0, 1 + 2*0.5) = 0.0
    # θ=0.7: q1 hit → 1 - mean(0, 0 + 1) = 0.5 ; lower thresholds only add false alarms
    value, thr = M.mtwv(scores, rel, beta=beta)
    assert value == pytest.approx(0.5) and thr == pytest.approx(0.9)
    # β tiny: accept everything → TWV → 1 - β-weighted FA ≈ 1
    assert M.mtwv(scores, rel, beta=1e-9)[0] == pytest.approx(1.0)
    # all false alarms first → detect nothing (TWV 0)
    assert M.mtwv(-scores, rel, beta=100.0) == (0.0, float("inf"))
    assert M.twv_beta(1e-4, c_miss=1.0, c_fa=0.1) == pytest.approx(999.9)


def test_mtwv_matches_threshold_sweep():
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=(5, 30)), 1)
    rel = rng.random((5, 30)) < 0.15
    rel[:, 3] = True
    beta = 3.0

    def twv(theta):
        det = scores >= theta
        p_miss = 1 - (det & rel).sum(1) / rel.sum(1)
        p_fa = (det & ~rel).sum(1) / (~rel).sum(1)
        return 1 - np.mean(p_miss + beta * p_fa)

    expect = max(0.0, max(twv(t) for t in np.unique(scores)))
    assert M.mtwv(scores, rel, beta=beta)[0] == pytest.approx(expect)
