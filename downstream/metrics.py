"""Metrics of the downstream tasks, each following the definition SUPERB reports.

=================  ==========================================  =========  ===========
function           used by                                     direction  range
=================  ==========================================  =========  ===========
accuracy           ks, sid, ic, er                             higher     [0, 1]
error_rate         pr (PER), asr (WER, CER)                    lower      [0, inf)
wer / cer          asr                                         lower      [0, inf)
eer                asv                                         lower      [0, 1]
der                sd                                          lower      [0, inf)
slot_type_f1       sf                                          higher     [0, 1]
slot_value_cer     sf                                          lower      [0, inf)
mean_average_prec  qbe (MAP)                                   higher     [0, 1]
mtwv               qbe (maximum term-weighted value)           higher     (-inf, 1]
=================  ==========================================  =========  ===========

Error rates are corpus-level: total edits over total reference tokens (not a mean of
per-utterance rates), as Kaldi, jiwer and s3prl compute them. When the references hold no
token at all, the rate is the number of inserted tokens (edits / max(tokens, 1), as jiwer):
0 for an empty hypothesis, 1.0 for one inserted word. :func:`rate` is that one definition;
every task that reports an error rate from summed counts divides with it.
"""
from __future__ import annotations

import re
from typing import Sequence

import editdistance
import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = [
    "accuracy", "rate", "error_rate", "wer", "cer", "eer", "der", "DERStats",
    "parse_slots", "slot_type_f1", "slot_value_cer", "slot_value_counts",
    "average_precision", "mean_average_precision", "mtwv", "twv_beta",
]


def accuracy(predictions: Sequence[object], targets: Sequence[object]) -> float:
    """Fraction of ``predictions`` equal to ``targets`` (same length, > 0)."""
    _check_pairs(predictions, targets, "predictions", "targets")
    return sum(p == t for p, t in zip(predictions, targets)) / len(targets)


def rate(errors: float, total: float) -> float:
    """An error rate from summed counts: ``errors / max(total, 1)``.

    With no reference tokens (``total == 0``) every error is an insertion and the rate is
    their count (jiwer's convention), never a division by zero or by a tiny epsilon.

    Raises:
        ValueError: negative counts.
    """
    if errors < 0 or total < 0:
        raise ValueError(f"rate: counts must be >= 0, got {errors} errors over {total} tokens")
    return float(errors) / max(float(total), 1.0)


def error_rate(hypotheses: Sequence[Sequence[object]], references: Sequence[Sequence[object]]) -> float:
    """Token error rate: Levenshtein edits summed over utterances / reference tokens summed
    (:func:`rate`: with no reference token, the number of inserted tokens).

    Tokens are any hashable items (phones for PER, words for WER, characters for CER).

    Raises:
        ValueError: different numbers of hypotheses and references, or none.
    """
    _check_pairs(hypotheses, references, "hypotheses", "references")
    edits = sum(editdistance.eval(list(h), list(r)) for h, r in zip(hypotheses, references))
    return rate(edits, sum(len(r) for r in references))


def wer(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Word error rate of whitespace-tokenised strings."""
    return error_rate([h.split() for h in hypotheses], [r.split() for r in references])


def cer(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Character error rate; runs of whitespace count as one space, ends are stripped."""
    norm = lambda s: " ".join(s.split())  # noqa: E731 -- a one-line normaliser
    return error_rate([norm(h) for h in hypotheses], [norm(r) for r in references])


def eer(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> tuple[float, float]:
    """Equal error rate of a detection task (speaker verification).

    The ROC is built from every distinct score as a threshold ("accept if score >= t").
    The EER is where the false-acceptance rate (FAR) equals the false-rejection rate (FRR);
    between the two ROC points that bracket the crossing both rates are interpolated
    linearly, as ``brentq`` over sklearn's interpolated ROC does in s3prl and VoxCeleb tools.

    Args:
        scores: ``(N,)`` trial scores, higher = more likely the same speaker.
        labels: ``(N,)`` 1 for target (same-speaker) trials, 0 for non-target trials.

    Returns:
        (eer, threshold): the EER in [0, 1] and the score threshold at the crossing
        (interpolated the same way).

    Raises:
        ValueError: lengths differ, labels not 0/1, or one of the classes is missing.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"eer: {s.size} scores but {y.size} labels")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"eer: labels must be 0 or 1, got {sorted(set(y.tolist()))[:5]}")
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"eer: need target and non-target trials, got {n_pos} target and {n_neg} non-target")
    if not np.isfinite(s).all():
        raise ValueError("eer: scores contain NaN or inf")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    # Thresholds at each distinct score, descending; accepting everything >= threshold.
    last_of_run = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(y)[last_of_run]
    fp = np.cumsum(1 - y)[last_of_run]
    far = np.r_[0.0, fp / n_neg]            # rises from 0 to 1
    frr = np.r_[1.0, 1.0 - tp / n_pos]      # falls from 1 to 0
    thr = np.r_[s[0] + 1.0, s[last_of_run]]
    diff = frr - far                        # non-increasing: 1 ... -1
    k = int(np.nonzero(diff <= 0)[0][0])    # first point at or past the crossing
    if diff[k] == 0:
        return float(far[k]), float(thr[k])
    # Interpolate between point k-1 (diff > 0) and k (diff < 0).
    w = diff[k - 1] / (diff[k - 1] - diff[k])
    rate = far[k - 1] + w * (far[k] - far[k - 1])
    return float(rate), float(thr[k - 1] + w * (thr[k] - thr[k - 1]))


class DERStats(dict):
    """Frame counts behind a DER: ``speech`` (scored reference speaker-frames), ``miss``,
    ``false_alarm``, ``confusion`` and ``frames`` (scored frames). ``.der`` is their ratio."""

    @property
    def der(self) -> float:
        if self["speech"] == 0:
            raise ValueError("DER undefined: the reference has no speech in the scored frames")
        return (self["miss"] + self["false_alarm"] + self["confusion"]) / self["speech"]

    def __add__(self, other: "DERStats") -> "DERStats":
        return DERStats({k: self[k] + other[k] for k in self})


def der(reference: np.ndarray, hypothesis: np.ndarray, *, collar: int = 0,
        skip_overlap: bool = False) -> DERStats:
    """Frame-level diarization error of one recording (NIST definition on frames).

    Speakers of the hypothesis are mapped one-to-one to reference speakers so as to maximise
    the frames where both are active (Hungarian algorithm); this is the optimal mapping
    whatever the order of the system's outputs (permutation-free). Per scored frame with
    ``n_ref`` active reference and ``n_sys`` active system speakers, ``n_map`` of them mapped
    pairs active together::

        miss = max(n_ref - n_sys, 0)   false_alarm = max(n_sys - n_ref, 0)
        confusion = min(n_ref, n_sys) - n_map          DER = sum(errors) / sum(n_ref)

    Args:
        reference: ``(T, S_ref)`` speaker activity, nonzero = active.
        hypothesis: ``(T, S_sys)`` system activity (bool or 0/1), same ``T``.
        collar: frames excluded on *each* side of every reference segment boundary (0 =
            none), the recording's first and last frame included: a segment starting at frame
            0 or ending at the last frame has a boundary there (NIST / pyannote.metrics, whose
            ``collar`` is the total width, ``2 * collar`` frames).
        skip_overlap: exclude frames where the reference has more than one speaker.

    Returns:
        the counts (add them over recordings, then take ``.der``).
    """
    ref = np.asarray(reference) != 0
    hyp = np.asarray(hypothesis) != 0
    if ref.ndim != 2 or hyp.ndim != 2:
        raise ValueError(f"der: expected (T, S) arrays, got reference {ref.shape} and hypothesis {hyp.shape}")
    if ref.shape[0] != hyp.shape[0]:
        raise ValueError(f"der: reference has {ref.shape[0]} frames, hypothesis {hyp.shape[0]}; "
                         "trim or pad the system output to the reference length")
    if collar < 0:
        raise ValueError(f"der: collar must be >= 0 frames, got {collar}")
    scored = np.ones(ref.shape[0], dtype=bool)
    if collar > 0 and ref.shape[1] > 0:
        padded = np.pad(ref.astype(np.int8), ((1, 1), (0, 0)))      # (T + 2, S): silence around
        change = np.nonzero(np.any(np.diff(padded, axis=0) != 0, axis=1))[0]
        for c in change:  # boundary between frames c-1 and c, c in [0, T]
            scored[max(c - collar, 0):c + collar] = False
    if skip_overlap:
        scored &= ref.sum(1) <= 1
    ref, hyp = ref[scored], hyp[scored]
    n_ref, n_sys = ref.sum(1), hyp.sum(1)
    n_map = np.zeros_like(n_ref)
    if ref.shape[1] and hyp.shape[1]:
        overlap = ref.T.astype(np.int64) @ hyp.astype(np.int64)       # (S_ref, S_sys)
        rows, cols = linear_sum_assignment(-overlap)
        n_map = (ref[:, rows] & hyp[:, cols]).sum(1)
    return DERStats(
        speech=int(n_ref.sum()), miss=int(np.maximum(n_ref - n_sys, 0).sum()),
        false_alarm=int(np.maximum(n_sys - n_ref, 0).sum()),
        confusion=int((np.minimum(n_ref, n_sys) - n_map).sum()), frames=int(scored.sum()))


# --- slot filling (SUPERB / s3prl definitions over "B-type value words E-type" strings) ---

# B-<type>, then the fewest words (maybe none), then the first E-<type> token of the same type
_SLOT_RE = re.compile(r"(?<!\S)B-(\S+) (?:(.+?) )??E-\1(?!\S)")


def parse_slots(text: str) -> list[tuple[str, str]]:
    """The ``(slot_type, value)`` pairs of a tagged transcript, left to right.

    A slot is written inline as ``B-<type> value words E-<type>``, e.g.
    ``"turn on the B-device lights E-device in the B-room kitchen E-room"``. A slot's value
    is the words between ``B-<type>`` and the next ``E-<type>`` token, possibly none (a CTC
    decoder can emit ``"B-x E-x"``: the slot ``("x", "")``, which does not reach into the
    words or slots after it); the next slot is looked for after that ``E-<type>``. Tags
    inside a value are dropped from the value; a ``B-<type>`` never closed is no slot.
    """
    text = " ".join(text.split())
    out = []
    for slot, value in _SLOT_RE.findall(text):
        words = [w for w in value.split() if not (w.startswith("B-") or w.startswith("E-"))]
        out.append((slot, " ".join(words)))
    return out


def _slot_dict(text: str) -> dict[str, list[str]]:
    d: dict[str, list[str]] = {}
    for slot, value in parse_slots(text):
        d.setdefault(slot, []).append(value)
    return d


def slot_type_f1(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Slot-type F1 (SUPERB SF): per utterance, F1 between the *sets of slot types*
    predicted and present (1 when both are empty, 0 when one is), averaged over utterances."""
    _check_pairs(hypotheses, references, "hypotheses", "references")
    f1s = []
    for h, r in zip(hypotheses, references):
        hyp, ref = set(_slot_dict(h)), set(_slot_dict(r))
        if not hyp and not ref:
            f1s.append(1.0)
        elif not hyp or not ref:
            f1s.append(0.0)
        else:
            p, rc = len(hyp & ref) / len(hyp), len(hyp & ref) / len(ref)
            f1s.append(2 * p * rc / (p + rc) if p + rc > 0 else 0.0)
    return float(np.mean(f1s))


def slot_value_cer(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Slot-value CER (SUPERB SF): for every reference slot value, the hypothesis value of
    the same type with the lowest CER (empty if the type was not predicted); the CER of those
    pairs, pooled over the test set. Predicted types absent from the reference are not scored."""
    _check_pairs(hypotheses, references, "hypotheses", "references")
    edits = chars = slots = 0
    for h, r in zip(hypotheses, references):
        e, c, n = slot_value_counts(h, r)
        edits, chars, slots = edits + e, chars + c, slots + n
    if not slots:
        raise ValueError("slot_value_cer undefined: the references contain no slots")
    return rate(edits, chars)


def slot_value_counts(hypothesis: str, reference: str) -> tuple[int, int, int]:
    """``(edits, reference characters, reference slots)`` behind :func:`slot_value_cer` for
    one utterance (sum them over utterances, then :func:`rate` the first two)."""
    hyp, ref = _slot_dict(hypothesis), _slot_dict(reference)
    edits = chars = slots = 0
    for slot, values in ref.items():
        for rv in values:
            candidates = hyp.get(slot, [""])
            best = min(candidates, key=lambda hv: editdistance.eval(hv, rv) / max(len(rv), 1))
            edits += editdistance.eval(best, rv)
            chars += len(rv)
            slots += 1
    return edits, chars, slots


# --- query by example ---

def average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    """Average precision of one query: the mean, over relevant documents, of the precision
    at the rank of each (documents ranked by descending score; ties keep input order).

    Raises:
        ValueError: no relevant document.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    rel = np.asarray(relevant).reshape(-1) != 0
    if s.shape != rel.shape:
        raise ValueError(f"average_precision: {s.size} scores but {rel.size} relevance flags")
    if not rel.any():
        raise ValueError("average_precision undefined for a query with no relevant document")
    hits = rel[np.argsort(-s, kind="stable")]
    ranks = np.nonzero(hits)[0] + 1
    return float(np.mean(np.arange(1, ranks.size + 1) / ranks))


def mean_average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    """MAP over queries. ``scores`` and ``relevant`` are ``(Q, N_docs)``; queries without
    any relevant document are skipped (they have no AP), and at least one must remain."""
    s, rel = np.asarray(scores), np.asarray(relevant)
    if s.shape != rel.shape or s.ndim != 2:
        raise ValueError(f"mean_average_precision: expected two (Q, N) arrays, got {s.shape} and {rel.shape}")
    aps = [average_precision(s[q], rel[q]) for q in range(s.shape[0]) if rel[q].any()]
    if not aps:
        raise ValueError("mean_average_precision: no query has a relevant document")
    return float(np.mean(aps))


def twv_beta(p_target: float = 0.0008, c_miss: float = 100.0, c_fa: float = 1.0) -> float:
    """β of the term-weighted value, ``(C_fa / C_miss) * (1 / P_target - 1)``.

    The defaults are the QUESST 2014 costs (β ≈ 12.49); NIST STD 2006 used β = 999.9.
    """
    if not 0 < p_target < 1:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    return (c_fa / c_miss) * (1.0 / p_target - 1.0)


def mtwv(scores: np.ndarray, relevant: np.ndarray, *, beta: float | None = None) -> tuple[float, float]:
    """Maximum term-weighted value over one global decision threshold.

    Every (query, document) pair is a trial; a pair is detected when its score is ``>= θ``.
    ``TWV(θ) = 1 - mean_q [P_miss(q, θ) + β P_fa(q, θ)]`` over queries with at least one
    relevant document, where ``P_miss = misses / relevant`` and
    ``P_fa = false alarms / non-relevant`` of that query. Detecting nothing gives TWV = 0,
    so MTWV >= 0. Scores should be comparable across queries (s3prl z-normalises each
    query's scores first).

    Args:
        scores: ``(Q, N_docs)`` detection scores.
        relevant: ``(Q, N_docs)`` 1 where the query occurs in the document.
        beta: weight of false alarms; default :func:`twv_beta` ().

    Returns:
        (mtwv, threshold): the maximum and the threshold reaching it (inf if none beats 0).
    """
    s = np.asarray(scores, dtype=np.float64)
    rel = np.asarray(relevant) != 0
    if s.shape != rel.shape or s.ndim != 2:
        raise ValueError(f"mtwv: expected two (Q, N) arrays, got {s.shape} and {rel.shape}")
    beta = twv_beta() if beta is None else float(beta)
    keep = rel.any(1)
    if not keep.any():
        raise ValueError("mtwv: no query has a relevant document")
    s, rel = s[keep], rel[keep]
    n_q = s.shape[0]
    n_true = rel.sum(1).astype(np.float64)
    n_false = np.maximum((~rel).sum(1), 1).astype(np.float64)
    # Sweep the threshold down through all scores: each trial adds its query's share
    # to the hit term (1/n_true/Q) or the false-alarm term (beta/n_false/Q).
    flat_s = s.reshape(-1)
    gain = np.where(rel, 1.0 / n_true[:, None], -beta / n_false[:, None]).reshape(-1) / n_q
    order = np.argsort(-flat_s, kind="stable")
    twv = np.cumsum(gain[order])  # TWV when accepting the first k+1 trials
    sorted_s = flat_s[order]
    last_of_run = np.r_[np.nonzero(np.diff(sorted_s))[0], sorted_s.size - 1]  # ties move together
    twv, thr = twv[last_of_run], sorted_s[last_of_run]
    best = int(np.argmax(twv))
    if twv[best] <= 0:
        return 0.0, float("inf")
    return float(twv[best]), float(thr[best])


def _check_pairs(a: Sequence[object], b: Sequence[object], name_a: str, name_b: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{len(a)} {name_a} but {len(b)} {name_b}; they must pair up one to one")
    if len(b) == 0:
        raise ValueError(f"no {name_b} to score")
