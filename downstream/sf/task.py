"""Slot filling (see the package docstring)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from speechssl.data.manifest import read_dict
from speechssl.downstream import metrics
from speechssl.downstream.ctc import CTCHeadConfig, CTCTask, DecoderConfig, word_char_counts
from speechssl.downstream.task import read_subset_labels

__all__ = ["SFConfig", "SlotFilling", "tag_slots"]


@dataclass
class SFConfig:
    """Slot filling."""

    subset: str = "commands"  # corpus subfolder with manifests, .wrd and .slot labels
    head: CTCHeadConfig = field(default_factory=CTCHeadConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)


def tag_slots(words: list[str], bio: list[str], *, where: str = "") -> str:
    """Words and BIO tags → SUPERB's inline form ``w B-type v v E-type w``.

    A slot starts at ``B-type`` (or at an ``I-type`` that does not continue a ``type`` slot)
    and ends after its last ``I-type`` word.
    """
    if len(words) != len(bio):
        raise ValueError(f"{where}: {len(words)} words but {len(bio)} slot tags")
    out: list[str] = []
    open_type = None
    for word, tag in zip(words, bio):
        kind, _, slot = tag.partition("-")
        if tag != "O" and (kind not in ("B", "I") or not slot):
            raise ValueError(f"{where}: bad slot tag {tag!r}; expected O, B-<type> or I-<type>")
        continues = kind == "I" and slot == open_type
        if open_type is not None and not continues:
            out.append(f"E-{open_type}")
            open_type = None
        if tag != "O" and not continues:
            out.append(f"B-{slot}")
            open_type = slot
        out.append(word)
    if open_type is not None:
        out.append(f"E-{open_type}")
    return " ".join(out)


def _is_tag(token: str) -> bool:
    return len(token) > 2 and token[:2] in ("B-", "E-")


class SlotFilling(CTCTask):
    """CTC over letters, ``|`` and slot tags; scored by slot-type F1 and slot-value CER."""

    name = "sf"
    label_ext = "slot"
    trainer_defaults: ClassVar[dict[str, Any]] = {**CTCTask.trainer_defaults, "best_metric": "slot_f1",
                                                  "maximize_best_metric": True}

    def label_rows(self, split: str, manifest: Any) -> list[str]:
        words = read_subset_labels(manifest, "wrd")
        tags = read_subset_labels(manifest, "slot")
        src = manifest.source.with_suffix(".slot")
        return [tag_slots(w.split(), t.split(), where=f"{src}:{i}") for i, (w, t) in enumerate(zip(words, tags), 1)]

    def dict_tokens(self, directory: Any) -> list[str] | None:
        """Letters of ``dict.ltr.txt`` and a B-/E- tag per slot type of ``dict.slot.txt``."""
        letters, tags = directory / "dict.ltr.txt", directory / "dict.slot.txt"
        if not (letters.is_file() and tags.is_file()):
            return None
        types = sorted({t.partition("-")[2] for t in read_dict(tags).symbols if t != "O"})
        return read_dict(letters).symbols + [f"{k}-{t}" for t in types for k in ("B", "E")]

    def tokens(self, row: str) -> list[str]:
        out: list[str] = []
        for word in row.split():
            out += [word] if _is_tag(word) else list(word)
            out.append("|")
        return out

    def text(self, tokens: list[str]) -> str:
        return " ".join("".join(f" {t} " if _is_tag(t) else " " if t == "|" else t for t in tokens).split())

    def ratio_metrics(self, hyps: list[str], refs: list[str]) -> dict[str, tuple[float, float]]:
        plain = lambda s: " ".join(w for w in s.split() if not _is_tag(w))  # noqa: E731
        out = {"wer": word_char_counts([plain(h) for h in hyps], [plain(r) for r in refs])["wer"]}
        out["slot_f1"] = (metrics.slot_type_f1(hyps, refs) * len(refs), float(len(refs)))
        slot_edits = slot_chars = 0
        for h, r in zip(hyps, refs):  # slot-value CER pooled over utterances, as metrics.slot_value_cer
            edits, chars, _ = metrics.slot_value_counts(h, r)
            slot_edits, slot_chars = slot_edits + edits, slot_chars + chars
        out["slot_cer"] = (float(slot_edits), float(slot_chars))
        return out

