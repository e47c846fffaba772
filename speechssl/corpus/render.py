"""Turn one planned corpus item into a 16 kHz waveform plus its phone and word alignments.

Signal chain for speech: espeak with the speaker's voice in the item's style and session
(22.05 kHz int16) -> soxr resampling to 16 kHz -> one equaliser for the speaker's timbre and the
session's channel -> level normalisation (speech RMS, random per utterance, plus the style's
gain) -> silence padding -> coloured background noise at a random SNR -> peak limiting.
Every random draw comes from the item's own seed, so an item's audio is a pure function of
the plan, whatever process renders it and whatever it rendered before.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from speechssl.audio import resample
from speechssl.corpus.align import SILENCE, Segment, phone_segments, speech_bounds
from speechssl.corpus.espeak import Espeak, Synthesis
from speechssl.corpus.labels import words_of
from speechssl.corpus.speakers import STYLES, Session, Speaker, Style, timbre_filter

__all__ = ["Item", "Rendered", "render", "SAMPLE_RATE", "CLIP_SAMPLES"]

SAMPLE_RATE = 16000
CLIP_SAMPLES = 16000  # keyword clips: exactly 1 s

# (low, high) ranges of the per-item random draws, by item kind.
_PAD_S = {"sentence": (0.10, 0.35), "term": (0.08, 0.20)}
_SNR_DB = {"sentence": (30.0, 50.0), "term": (30.0, 50.0), "word_clip": (12.0, 40.0)}
_LEVEL_DBFS = (-28.0, -18.0)  # RMS of the speech part
_NOISE_CLIP_DBFS = (-60.0, -30.0)
_PEAK = 0.98


@dataclass
class Item:
    """One utterance of the plan.

    Attributes:
        uid: utterance id, the wav's file name without ``.wav``.
        subset: ``read``, ``keywords``, ``commands``, ``verification`` or ``qbe``.
        split: manifest the item goes to (``train``, ``valid``, ``test``, ``queries``, ``docs``).
        kind: ``sentence`` (padded utterance), ``term`` (isolated word, lightly padded),
            ``word_clip`` (1 s keyword clip) or ``noise_clip`` (1 s of noise only).
        text: what is spoken (empty for noise clips).
        speaker: who speaks it (None for noise clips).
        style: prosody style.
        session: how this utterance departs from the speaker's voice (identity by default).
        seed: the item's seed (audio randomness and espeak's noise generators).
        labels: label name -> label row (``wrd``, ``topic``, ``intent``, ...), written as is.
    """

    uid: str
    subset: str
    split: str
    kind: str
    text: str
    speaker: Speaker | None
    style: Style = STYLES[0]
    session: Session = Session()
    seed: int = 0
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Rendered:
    """A rendered item: ``audio`` ``(S,)`` float32 at 16 kHz, phone ``segments`` covering it
    (empty for noise clips) and ``words``: ``(text, start, end)`` sample spans of espeak's word
    groups (a group is a word plus any unstressed function words espeak attached to it)."""

    audio: np.ndarray
    segments: list[Segment]
    words: list[tuple[str, int, int]]

    def to_meta(self) -> dict[str, Any]:
        return {"num_samples": int(self.audio.shape[0]),
                "segments": [[s.phone, s.start, s.end] for s in self.segments],
                "words": [list(w) for w in self.words]}


def _noise(rng: np.random.Generator, n: int, colour: str) -> np.ndarray:
    """Unit-RMS noise ``(n,)``: white, pink (1/f power) or brown (1/f^2 power)."""
    if colour == "white":
        noise = rng.standard_normal(n)
    else:
        alpha = {"pink": 1.0, "brown": 2.0}[colour]
        n_fft = 1 << max(1, (n - 1).bit_length())  # a power of two: FFTs of odd lengths are slow
        spec = np.fft.rfft(rng.standard_normal(n_fft))
        f = np.fft.rfftfreq(n_fft, 1.0 / SAMPLE_RATE)
        f[0] = f[1]
        spec *= (f / 100.0) ** (-alpha / 2.0)
        noise = np.fft.irfft(spec, n_fft)[:n]
    return noise / max(float(np.sqrt(np.mean(noise ** 2))), 1e-12)


def _db(x: float) -> float:
    return 10.0 ** (x / 20.0)


def _word_spans(text: str, syn: Synthesis, offset: int, total: int) -> list[tuple[str, int, int]]:
    ratio = SAMPLE_RATE / syn.sample_rate
    starts = sorted({w.text_position for w in syn.words})
    spans = []
    for i, pos in enumerate(starts):
        end_char = starts[i + 1] - 1 if i + 1 < len(starts) else len(text)
        group = words_of(text[pos - 1:end_char])
        idx = [j for j, p in enumerate(syn.phones) if p.text_position == pos and not p.phone.startswith("_")]
        if not group or not idx:
            continue
        end_sample = syn.phones[idx[-1] + 1].sample if idx[-1] + 1 < len(syn.phones) else syn.audio.shape[0]
        start = offset + round(syn.phones[idx[0]].sample * ratio)
        end = offset + round(end_sample * ratio)
        spans.append((" ".join(group), min(total, max(0, start)), min(total, max(0, end))))
    return spans


def render(item: Item, tts: Espeak) -> Rendered:
    """Synthesize and post-process ``item`` (see the module docstring)."""
    rng = np.random.default_rng([item.seed, 0xA0D10])
    if item.kind == "noise_clip":
        colour = ("white", "pink", "brown")[int(rng.integers(3))]
        audio = _noise(rng, CLIP_SAMPLES, colour) * _db(rng.uniform(*_NOISE_CLIP_DBFS))
        return Rendered(audio.astype(np.float32), [Segment(SILENCE, 0, CLIP_SAMPLES)], [])
    if item.speaker is None:
        raise ValueError(f"item {item.uid}: a {item.kind} item needs a speaker")
    syn = tts.synthesize(item.text, item.speaker.voice(item.style, item.session), seed=item.seed & 0x7FFFFFFF)
    if syn.audio.size == 0 or not syn.phones:
        raise RuntimeError(f"item {item.uid}: espeak produced no audio for {item.text!r}")
    speech = resample(syn.audio.astype(np.float32) / 32768.0, syn.sample_rate, SAMPLE_RATE).astype(np.float64)
    speech = np.convolve(speech, timbre_filter(item.speaker.filter_gains(item.session), SAMPLE_RATE), mode="same")
    n_speech = speech.shape[0]
    segs = phone_segments(syn.phones, src_rate=syn.sample_rate, dst_rate=SAMPLE_RATE,
                          src_length=syn.audio.shape[0], offset=0, total_length=n_speech)
    s0, s1 = speech_bounds(segs)
    active = speech[s0:s1]
    rms = float(np.sqrt(np.mean(active ** 2))) if active.size else 0.0
    if rms <= 0.0:
        raise RuntimeError(f"item {item.uid}: espeak produced silence for {item.text!r}")
    level = _db(rng.uniform(*_LEVEL_DBFS) + item.style.gain_db)
    speech *= level / rms

    if item.kind == "word_clip":
        lo, hi = max(0, s0 - 320), min(n_speech, s1 + 640)
        if hi - lo > CLIP_SAMPLES:  # longer than 1 s: keep the middle second
            lo = lo + (hi - lo - CLIP_SAMPLES) // 2
            hi = lo + CLIP_SAMPLES
        left = int(rng.integers(0, CLIP_SAMPLES - (hi - lo) + 1))
        total = CLIP_SAMPLES
        src_offset = left - lo
        body = speech[lo:hi]
    else:
        pad_lo, pad_hi = _PAD_S[item.kind]
        left = int(round(rng.uniform(pad_lo, pad_hi) * SAMPLE_RATE))
        right = int(round(rng.uniform(pad_lo, pad_hi) * SAMPLE_RATE))
        total = left + n_speech + right
        src_offset = left
        body = speech
    audio = np.zeros(total)
    audio[left:left + body.shape[0]] = body
    snr = rng.uniform(*_SNR_DB[item.kind])
    colour = ("white", "pink", "brown")[int(rng.integers(3))]
    audio += _noise(rng, total, colour) * level / _db(snr)
    peak = float(np.abs(audio).max())
    if peak > _PEAK:
        audio *= _PEAK / peak
    # the alignment of the final waveform: espeak's time line shifted by the padding
    segments = phone_segments(syn.phones, src_rate=syn.sample_rate, dst_rate=SAMPLE_RATE,
                              src_length=syn.audio.shape[0], offset=src_offset, total_length=total)
    if src_offset < 0:  # cropped clip: events before the crop start are clamped to 0
        segments = _clip_segments(segments, total)
    words = _word_spans(item.text, syn, src_offset, total)
    return Rendered(audio.astype(np.float32), segments, words)


def _clip_segments(segments: list[Segment], total: int) -> list[Segment]:
    out: list[Segment] = []
    for s in segments:
        start, end = max(0, s.start), min(total, s.end)
        if end > start:
            out.append(Segment(s.phone, start, end))
    if not out or out[0].start > 0:
        out.insert(0, Segment(SILENCE, 0, out[0].start if out else total))
    return out
