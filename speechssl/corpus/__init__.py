"""The embedded speech corpus: synthetic English speech from espeak-ng, with exact labels.

Build it with ``speechssl corpus synth --preset {tiny,small,base} --out DIR [--seed N] [--jobs N]
[--session-variability]`` or :func:`synthesize_corpus`; in tests use the ``tiny_corpus`` fixture.
Presets: ``tiny`` ~10 min (10 speakers + 4 held-out), ``small`` ~2.9 h (40 + 10), ``base`` ~12 h
(100 + 20). The same preset and seed give byte-identical files whatever the number of jobs.
Session variability (off by default) gives every utterance its own prosody jitter and channel.

Modules: ``espeak`` (ctypes driver), ``text`` + ``texts/*.json`` (grammars), ``speakers``
(voices, timbre, styles, sessions), ``plan`` (presets, what each utterance is), ``render`` (audio
post-processing), ``align`` (phone segments and 10 ms frame labels), ``synth`` (parallel,
resumable build), ``card`` (corpus.json/README), ``importers`` (LibriSpeech, Speech Commands,
generic manifests), ``labels`` (transcript helpers).

The layout of a built corpus (subsets, files, label formats) is ``speechssl.corpus.card.LAYOUT``,
which every build also writes into its own README.md.

Audio: 16 kHz mono 16-bit PCM WAV. Manifests: ``speechssl.data.read_manifest``; labels:
``read_labels``; dictionaries: ``read_dict``. Frame labels (``.phn_ali``) are at 100 Hz and match
``check_label_frames(manifest, rows, 100)``.
"""
from __future__ import annotations

from speechssl.corpus.plan import PRESETS, SUBSETS, Preset, make_plan
from speechssl.corpus.synth import is_complete, synthesize_corpus

__all__ = ["synthesize_corpus", "is_complete", "make_plan", "Preset", "PRESETS", "SUBSETS"]
