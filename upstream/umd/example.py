"""A tiny UMD training set (``Method.example``): the ``tiny`` image corpus's scenes, without digits."""
from __future__ import annotations

from pathlib import Path

from speechssl.upstream.umd.task import UMDTaskConfig

__all__ = ["write_example"]


def write_example(directory: Path, seed: int = 0) -> UMDTaskConfig:
    """Render the ``tiny`` image corpus under ``directory``; returns the task config that pretrains on its scenes."""
    from speechssl.corpus.image import build_image_corpus

    build_image_corpus(directory, "tiny", seed, digits=False)
    return UMDTaskConfig(data=str(Path(directory) / "scenes"))
