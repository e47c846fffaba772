"""A tiny MixedAE training set (``Method.example``): the ``tiny`` image corpus's scenes, without digits."""
from __future__ import annotations

from pathlib import Path

from speechssl.upstream.mixedae.task import MixedAETaskConfig

__all__ = ["write_example"]


def write_example(directory: Path, seed: int = 0) -> MixedAETaskConfig:
    """Render the ``tiny`` image corpus under ``directory``; returns the task config that pretrains on its scenes."""
    from speechssl.corpus.image import build_image_corpus

    build_image_corpus(directory, "tiny", seed, digits=False)
    return MixedAETaskConfig(data=str(Path(directory) / "scenes"))
