"""Speech recognition (see the package docstring)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from speechssl.downstream.ctc import CTCHeadConfig, CTCTask, DecoderConfig, word_char_counts

__all__ = ["ASRConfig", "SpeechRecognition"]


@dataclass
class ASRConfig:
    """Character-CTC speech recognition."""

    subset: str = "read"  # corpus subfolder with manifests and .ltr labels
    head: CTCHeadConfig = field(default_factory=CTCHeadConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)


class SpeechRecognition(CTCTask):
    """CTC over letters and the word boundary ``|``, scored by WER (and CER)."""

    name = "asr"
    label_ext = "ltr"
    trainer_defaults: ClassVar[dict[str, Any]] = {**CTCTask.trainer_defaults, "best_metric": "wer"}

    def text(self, tokens: list[str]) -> str:
        return "".join(" " if t == "|" else t for t in tokens).strip()

    def ratio_metrics(self, hyps: list[str], refs: list[str]) -> dict[str, tuple[float, float]]:
        return word_char_counts(hyps, refs)
