"""The embedded image corpus: procedurally rendered scenes and road scenes, plus scikit-learn's digits.

Build it with ``speechssl corpus images --preset {tiny,small} --out DIR [--seed N]`` or
:func:`build_image_corpus`. Presets: ``tiny`` (32 px scenes, 160 + 40 road scenes, CPU
seconds) and ``small`` (64 px, 5000 + 1000). The same preset and seed give byte-identical
files. Nothing is downloaded: scenes are drawn with numpy (:mod:`.render`, :mod:`.roads`),
the digits ship inside scikit-learn (:mod:`.digits`).

Modules: ``render`` (shapes, colours, textures, backgrounds, scenes with masks), ``roads``
(aerial road scenes), ``digits`` (the sklearn export and its split), ``build`` (presets,
files), ``card`` (corpus.json / README.md and :data:`~.card.LAYOUT`, the file layout).

Images are PNG files under manifests in the format of :mod:`speechssl.data.files` (size
column = pixels), read by :class:`speechssl.data.ImageDataset`; labels are one line per
manifest row (``utterance`` labels for the factors), masks are 8-bit grey PNGs read by
:func:`read_mask`.
"""
from __future__ import annotations

from speechssl.corpus.image.build import PRESETS, SPLITS, ImagePreset, build_image_corpus, is_complete, read_mask

__all__ = ["build_image_corpus", "is_complete", "read_mask", "ImagePreset", "PRESETS", "SPLITS"]
