"""Synthetic speakers and speaking styles.

A speaker is an espeak accent x voice variant x base pitch x pitch range x rate, plus a fixed
"timbre": a zero-phase FIR equaliser (random gains on 9 bands and a spectral tilt) applied to
all of its audio. Everything about speaker ``k`` comes from ``(seed, k)``, so a speaker sounds
the same in every subset and every rebuild.

A style ("emotion proxy" for the ER task) is a relative change of rate, pitch, pitch range and
level applied on top of the speaker's own voice, so style is not speaker identity.

A session is how one utterance departs from its speaker's voice, as a real speaker's recordings
differ from day to day and microphone to microphone (VoxCeleb's "session variability"): a small
random change of pitch, pitch range and rate, and a random channel equaliser on top of the
speaker's timbre. Sessions are on by default (off: ``make_plan(..., sessions=False)``,
``corpus synth --no-session-variability``).
Without it every utterance of a speaker has the same long-term spectrum but for the style, and
mean-pooled log-mel statistics identify speakers almost perfectly, which real speech never allows.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from speechssl.corpus.espeak import Voice

__all__ = ["Speaker", "Style", "Session", "STYLES", "ACCENTS", "VARIANTS", "make_speakers", "timbre_filter"]

#: espeak English accents the speakers are drawn from.
ACCENTS: tuple[str, ...] = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc",
                            "en-gb-x-gbclan", "en-gb-x-gbcwmd")

#: espeak voice variants that sound like a person (robotic, whispered, unvoiced and
#: near-duplicate variants left out), with the voice's apparent gender (``m``, ``f``; ``c`` child).
VARIANTS: tuple[tuple[str, str], ...] = tuple(
    [(v, "m") for v in ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "Alex", "Andy", "Denis", "Diogo",
                        "Gene", "Henrique", "Hugo", "Jacky", "Lee", "Mario", "Michael", "Mike", "Reed",
                        "adam", "antonio", "benjamin", "boris", "david", "ed", "edward", "edward2", "gustave",
                        "iven", "iven3", "john", "kaukovalta", "klatt3", "klatt4", "klatt5", "klatt6", "marcelo",
                        "max", "michel", "miguel", "mike2", "norbert", "pablo", "paul", "pedro", "quincy",
                        "sandro", "travis", "victor", "Marco", "Nguyen", "RicishayMax", "announcer")]
    + [(v, "f") for v in ("f1", "f2", "f3", "f4", "f5", "Alicia", "Andrea", "Annie", "anika", "aunty",
                          "belinda", "grandma", "linda", "shelby", "steph", "steph2")]
    + [("zac", "c")])

_EQ_BANDS_HZ = (0.0, 150.0, 300.0, 600.0, 1200.0, 2400.0, 3600.0, 5000.0, 8000.0)
_EQ_TAPS = 63

# Session variation (uniform in +-): espeak pitch and range units (0..100 scales; speakers' own
# pitch spans 25..75), relative rate, and channel gain per equaliser band plus a spectral tilt
# (dB per octave above 500 Hz), a bit milder than the speakers' own timbre (6 dB, 2 dB).
_SESSION_PITCH = 6
_SESSION_RANGE = 10
_SESSION_RATE = 0.08
_SESSION_EQ_DB = 4.0
_SESSION_TILT_DB = 1.5


@dataclass(frozen=True)
class Style:
    """A speaking style relative to the speaker's voice.

    Attributes:
        name: label written to ``.style``.
        rate_scale: multiplies the speaker's rate (words per minute).
        pitch_shift: added to the speaker's espeak pitch (0..100 scale).
        range_shift: added to the speaker's pitch range (0..100 scale).
        gain_db: level change in dB.
    """

    name: str
    rate_scale: float
    pitch_shift: int
    range_shift: int
    gain_db: float


#: The four styles of the ``read`` subset (IEMOCAP-like class names; prosody only).
STYLES: tuple[Style, ...] = (
    Style("neutral", 1.0, 0, 0, 0.0),
    Style("happy", 1.1, 14, 25, 2.0),
    Style("sad", 0.8, -12, -25, -4.0),
    Style("angry", 1.22, 4, 12, 5.0),
)


@dataclass(frozen=True)
class Session:
    """How one utterance departs from its speaker's voice.

    Attributes:
        pitch_shift, range_shift: added to the espeak pitch and pitch range (0..100 scales).
        rate_scale: multiplies the rate.
        channel_gains_db: channel equaliser gains at ``_EQ_BANDS_HZ`` (dB), added to the
            speaker's timbre gains.
    """

    pitch_shift: int = 0
    range_shift: int = 0
    rate_scale: float = 1.0
    channel_gains_db: tuple[float, ...] = (0.0,) * len(_EQ_BANDS_HZ)

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "Session":
        """A random session (ranges: the module's ``_SESSION_*`` constants)."""
        bands = np.asarray(_EQ_BANDS_HZ)
        gains = (rng.uniform(-_SESSION_EQ_DB, _SESSION_EQ_DB, len(bands))
                 + rng.uniform(-_SESSION_TILT_DB, _SESSION_TILT_DB) * np.log2(1.0 + bands / 500.0))
        return cls(pitch_shift=int(rng.integers(-_SESSION_PITCH, _SESSION_PITCH + 1)),
                   range_shift=int(rng.integers(-_SESSION_RANGE, _SESSION_RANGE + 1)),
                   rate_scale=float(rng.uniform(1.0 - _SESSION_RATE, 1.0 + _SESSION_RATE)),
                   channel_gains_db=tuple(float(g) for g in gains))


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker.

    Attributes:
        id: ``spkNNN`` (train/valid/test speakers) or ``hldNNN`` (held-out, verification only).
        accent: espeak voice (language/accent).
        variant: espeak voice variant.
        gender: ``m``, ``f`` or ``c`` (child), from the variant.
        pitch, pitch_range, rate, word_gap: espeak prosody of the speaker's neutral voice.
        eq_gains_db: timbre equaliser gains at ``_EQ_BANDS_HZ`` (dB).
        heldout: True for verification-only speakers.
    """

    id: str
    accent: str
    variant: str
    gender: str
    pitch: int
    pitch_range: int
    rate: int
    word_gap: int
    eq_gains_db: tuple[float, ...]
    heldout: bool

    def voice(self, style: Style = STYLES[0], session: Session = Session()) -> Voice:
        """The espeak voice of this speaker speaking in ``style`` in ``session``."""
        return Voice(
            language=self.accent, variant=self.variant,
            rate=int(np.clip(round(self.rate * style.rate_scale * session.rate_scale), 80, 450)),
            pitch=int(np.clip(self.pitch + style.pitch_shift + session.pitch_shift, 0, 100)),
            pitch_range=int(np.clip(self.pitch_range + style.range_shift + session.range_shift, 0, 100)),
            word_gap=self.word_gap,
            # below espeak's default so that loud variants do not saturate its int16 output
            volume=60,
        )

    def filter_gains(self, session: Session = Session()) -> tuple[float, ...]:
        """Equaliser gains (dB at ``_EQ_BANDS_HZ``) of this speaker's timbre through ``session``'s
        channel; see :func:`timbre_filter`."""
        return tuple(float(a + b) for a, b in zip(self.eq_gains_db, session.channel_gains_db))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["eq_gains_db"] = [round(g, 3) for g in self.eq_gains_db]
        return d


def make_speakers(seed: int, num_train: int, num_heldout: int) -> list[Speaker]:
    """``num_train`` speakers ``spk001..`` then ``num_heldout`` speakers ``hld001..``.

    About 40 % of the speakers get a female/child variant, the rest a male one; variants are
    dealt without replacement from seeded shuffles of the two pools (so a variant comes round
    again only once its pool is used up, then with a different accent), and every speaker draws
    its own pitch, range, rate, word gap and equaliser.
    """
    if num_train < 1 or num_heldout < 0:
        raise ValueError(f"need >= 1 train speaker and >= 0 held-out, got {num_train}, {num_heldout}")
    rng = np.random.default_rng([seed, 0x5BEA4E5])
    male = [v for v in VARIANTS if v[1] == "m"]
    other = [v for v in VARIANTS if v[1] != "m"]
    decks: dict[str, list[tuple[str, str]]] = {"m": [], "f": []}
    rounds = {"m": 0, "f": 0}
    accent_offset = int(rng.integers(len(ACCENTS)))
    speakers = []
    for k in range(num_train + num_heldout):
        pool = "f" if k % 5 in (1, 3) else "m"
        if not decks[pool]:
            src = other if pool == "f" else male
            decks[pool] = [src[i] for i in rng.permutation(len(src))]
            rounds[pool] += 1
        variant, gender = decks[pool].pop()
        accent = ACCENTS[(accent_offset + k * 3 + rounds[pool]) % len(ACCENTS)]
        heldout = k >= num_train
        ident = f"hld{k - num_train + 1:03d}" if heldout else f"spk{k + 1:03d}"
        speakers.append(Speaker(
            id=ident, accent=accent, variant=variant, gender=gender,
            pitch=int(rng.integers(25, 76)), pitch_range=int(rng.integers(35, 81)),
            rate=int(rng.integers(145, 201)), word_gap=int(rng.choice([0, 0, 0, 1, 2])),
            eq_gains_db=tuple(float(g) for g in rng.uniform(-6.0, 6.0, len(_EQ_BANDS_HZ))
                              + rng.uniform(-2.0, 2.0) * np.log2(1.0 + np.asarray(_EQ_BANDS_HZ) / 500.0)),
            heldout=heldout,
        ))
    return speakers


def timbre_filter(gains_db: tuple[float, ...], sample_rate: int = 16000) -> np.ndarray:
    """Zero-phase FIR equaliser ``(taps,)`` with the given gains (dB) at ``_EQ_BANDS_HZ``.

    Frequency-sampling design: gains are interpolated over log-frequency onto a dense grid,
    turned into a linear-phase impulse response, Hann-windowed and normalised so that its
    average power gain is 1 (timbre changes, loudness does not). Apply it with
    ``np.convolve(x, h, mode="same")`` (odd, symmetric ``h``: no delay).
    """
    if len(gains_db) != len(_EQ_BANDS_HZ):
        raise ValueError(f"expected {len(_EQ_BANDS_HZ)} band gains, got {len(gains_db)}")
    n_fft = 512
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    bands = np.asarray(_EQ_BANDS_HZ) * (sample_rate / 16000.0)
    gain = np.interp(np.log1p(freqs / 100.0), np.log1p(bands / 100.0), np.asarray(gains_db))
    mag = 10.0 ** (gain / 20.0)
    h = np.fft.irfft(mag, n_fft)
    h = np.roll(h, _EQ_TAPS // 2)[:_EQ_TAPS] * np.hanning(_EQ_TAPS + 2)[1:-1]
    h /= np.sqrt(np.sum(np.abs(np.fft.rfft(h, n_fft)) ** 2) / (n_fft // 2 + 1))
    return h.astype(np.float64)
