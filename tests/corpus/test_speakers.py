"""Speakers, styles and sessions: the timbre/channel equaliser and per-utterance variation."""
from __future__ import annotations

import numpy as np
import pytest

from speechssl.corpus.align import speech_bounds
from speechssl.corpus.espeak import Espeak
from speechssl.corpus.plan import make_plan
from speechssl.corpus.render import Item, render
from speechssl.corpus.speakers import _EQ_BANDS_HZ, STYLES, Session, make_speakers, timbre_filter

TEXT = "Please turn on the lights in the kitchen before dinner."


@pytest.fixture(scope="module")
def tts() -> Espeak:
    return Espeak()


def _response_db(h: np.ndarray, freqs_hz: np.ndarray, sr: int = 16000) -> np.ndarray:
    """Magnitude response (dB) of the FIR ``h`` at ``freqs_hz``, by direct evaluation."""
    n = np.arange(h.shape[0])
    resp = np.exp(-2j * np.pi * np.outer(freqs_hz / sr, n)) @ h
    return 20 * np.log10(np.abs(resp))


def test_timbre_filter_follows_its_band_gains():
    """For gains that change slowly over the bands (the 63-tap Hann-windowed filter smears
    ~1 kHz, so alternating gains 300 Hz apart cannot be followed) the response at 300..5000 Hz
    tracks the gains up to the common offset of the power normalisation; a flat equaliser is
    the identity."""
    gains = (-6.0, -5.0, -4.0, -2.0, 0.0, 3.0, 4.0, 2.0, 1.0)
    bands = np.asarray(_EQ_BANDS_HZ)[2:-1]  # 300..5000 Hz
    resp = _response_db(timbre_filter(gains), bands)
    err = resp - np.asarray(gains)[2:-1]
    assert np.ptp(err) < 1.5, (resp, err)
    flat = timbre_filter((0.0,) * len(_EQ_BANDS_HZ))
    assert np.allclose(_response_db(flat, np.array([300.0, 1000.0, 4000.0])), 0.0, atol=0.1)


def test_default_session_is_the_speakers_own_voice():
    spk = make_speakers(0, 3, 0)[1]
    assert spk.voice(STYLES[2], Session()) == spk.voice(STYLES[2])
    assert spk.filter_gains() == pytest.approx(spk.eq_gains_db)
    s = Session(pitch_shift=5, range_shift=-7, rate_scale=1.1, channel_gains_db=tuple(float(i) for i in range(9)))
    v0, v = spk.voice(), spk.voice(session=s)
    assert (v.pitch - v0.pitch, v.pitch_range - v0.pitch_range) == (5, -7)
    assert v.rate == round(spk.rate * 1.1)
    assert spk.filter_gains(s) == pytest.approx(np.add(spk.eq_gains_db, np.arange(9)))


def test_session_draws_cover_symmetric_ranges():
    rng = np.random.default_rng(1)
    draws = [Session.draw(rng) for _ in range(2000)]
    pitch = np.array([d.pitch_shift for d in draws])
    rate = np.array([d.rate_scale for d in draws])
    gains = np.array([d.channel_gains_db for d in draws])  # (2000, 9)
    assert (pitch.min(), pitch.max()) == (-6, 6) and abs(pitch.mean()) < 0.3
    assert 0.92 <= rate.min() < 0.925 and 1.075 < rate.max() <= 1.08
    assert gains.shape == (2000, len(_EQ_BANDS_HZ)) and np.abs(gains.mean(0)).max() < 0.5
    # independent bands: the channel changes the spectrum's shape, not only its tilt
    corr = np.corrcoef(gains[:, 2], gains[:, 5])[0, 1]
    assert abs(corr) < 0.3 and gains.std(0).min() > 1.5


def test_renders_vary_from_session_to_session(tts):
    """The same sentence by the same speaker in six utterances: with a session each, speaking
    time and long-term spectrum change between them; with the identity session the speech is
    the same every time, whatever else the item's seed draws (level, padding, noise)."""
    spk = make_speakers(0, 2, 0)[0]
    rng = np.random.default_rng(3)

    def speech_of(seed, session):
        out = render(Item(uid=f"u{seed}", subset="read", split="train", kind="sentence", text=TEXT,
                          speaker=spk, session=session, seed=seed), tts)
        s0, s1 = speech_bounds(out.segments)
        x = out.audio[s0:s1].astype(np.float64)
        frames = np.lib.stride_tricks.sliding_window_view(x, 512)[::256] * np.hanning(512)
        ltas = 10 * np.log10(np.mean(np.abs(np.fft.rfft(frames)) ** 2, 0) + 1e-12)
        return s1 - s0, ltas - ltas.mean()

    def spread(renders):  # mean std over renders of the 500..5000 Hz bins of the LTAS (dB)
        return np.std([l for _, l in renders], axis=0)[16:160].mean()

    varied = [speech_of(seed, Session.draw(rng)) for seed in range(6)]
    durations = np.array([d for d, _ in varied])
    assert np.ptp(durations) / durations.mean() > 0.04
    fixed = [speech_of(seed, Session()) for seed in range(6)]
    assert len({d for d, _ in fixed}) == 1
    assert spread(varied) > 1.0 and spread(varied) > 2 * spread(fixed), (spread(varied), spread(fixed))


def test_plan_draws_sessions_unless_turned_off():
    """``sessions`` (the default) adds a session to every spoken item and changes nothing else
    of the plan."""
    plain, varied = make_plan("tiny", 0, sessions=False), make_plan("tiny", 0)
    assert all(it.session == Session() for it in plain.items)
    spoken = [it for it in varied.items if it.speaker is not None]
    assert all(it.session == Session() for it in varied.items if it.speaker is None)
    assert len({it.session for it in spoken}) == len(spoken)
    strip = lambda it: (it.uid, it.text, it.seed, it.style, it.labels, it.split)  # noqa: E731
    assert [strip(it) for it in plain.items] == [strip(it) for it in varied.items]
    again = make_plan("tiny", 0, sessions=True)
    assert [it.session for it in again.items] == [it.session for it in varied.items]
