"""Text: lines of a text file as sentencepiece token sequences, their collater, and model training.

A text file is UTF-8, one sentence per line; a ``<split>.wrd`` or ``.ltr`` label file is one
too. Blank lines are skipped (logged with the count); item ids are ``<file stem>:<line>``.
Items::

    {"id": str, "index": int, "line": int (1-based line of the file), "offset": int (first
     token kept), "tokens": Tensor (L,) int64}

All lines are tokenised when the dataset is built (so ``sizes``, tokens per item after the
cap, are known for ``max_tokens`` batching). A line longer than ``max_tokens_per_item`` is
cropped to a window of that many tokens (``bos``/``eos`` included), at a start drawn from
``(seed, epoch, index)`` (``crop="random"``) or at the start (``crop="start"``).
"""
from __future__ import annotations

import io
import logging
import re
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np
import torch

from speechssl.atomic import atomic_write_bytes
from speechssl.data.base import SizedDataset, check_seed, item_generator
from speechssl.data.augment import randint
from speechssl.data.manifest import FormatError
from speechssl.nn.lengths import pad_list, padding_mask

__all__ = ["read_lines", "load_sentencepiece", "train_sentencepiece", "train_sentencepiece_lines", "TextDataset",
           "TextCollater"]

_log = logging.getLogger(__name__)


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file (without newlines; a final newline adds no line).

    Raises:
        FileNotFoundError: naming the file.
        FormatError: ``<file>:<line>: not valid UTF-8 ...`` for the first undecodable line.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"text file not found: {path}") from None
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for lineno, line in enumerate(lines, start=1):
        try:
            out.append(line.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as exc:
            bad = line[exc.start:exc.start + 4]
            raise FormatError(f"{path}:{lineno}: not valid UTF-8 (byte {exc.start}: {bad!r})") from None
    return out


def load_sentencepiece(model: Any):
    """A ``sentencepiece.SentencePieceProcessor`` from a model file path (or one, returned as is)."""
    import sentencepiece as spm

    if isinstance(model, spm.SentencePieceProcessor):
        return model
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"sentencepiece model not found: {path}")
    sp = spm.SentencePieceProcessor()
    try:
        sp.Load(str(path))
    except (OSError, RuntimeError) as exc:
        raise FormatError(f"{path}: not a sentencepiece model ({exc})") from None
    return sp


def train_sentencepiece(text: str | Path, model_path: str | Path, vocab_size: int, *,
                        model_type: Literal["unigram", "bpe", "char", "word"] = "unigram",
                        character_coverage: float = 1.0, user_defined_symbols: Iterable[str] = (),
                        max_sentences: int = 0) -> Path:
    """Train a sentencepiece model on the non-blank lines of ``text``; write it atomically.

    Special ids: ``unk=0, bos=1, eos=2, pad=3`` (sentencepiece's defaults plus a pad piece, so
    batches pad with a real id). Training runs on one thread, so the same file and options
    give the same model bytes.

    Args:
        text: UTF-8 text file, one sentence per line.
        model_path: where the ``.model`` file goes (its directory is created).
        vocab_size: pieces in the vocabulary, the 4 specials included.
        model_type, character_coverage, user_defined_symbols: sentencepiece's options.
        max_sentences: train on the first this many lines (0: all).

    Returns:
        ``model_path``.

    Raises:
        FormatError: a line that is not UTF-8 (names file and line).
        ValueError: no non-blank line, or ``vocab_size`` more than the text supports (the
            message gives sentencepiece's limit).
    """
    text = Path(text)
    return train_sentencepiece_lines(read_lines(text), model_path, vocab_size, model_type=model_type,
                                     character_coverage=character_coverage,
                                     user_defined_symbols=user_defined_symbols, max_sentences=max_sentences,
                                     source=str(text))


_VOCAB_LIMIT = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")


def train_sentencepiece_lines(lines: Iterable[str], model_path: str | Path, vocab_size: int, *,
                              model_type: Literal["unigram", "bpe", "char", "word"] = "unigram",
                              character_coverage: float = 1.0, user_defined_symbols: Iterable[str] = (),
                              max_sentences: int = 0, source: str = "text") -> Path:
    """:func:`train_sentencepiece` on sentences in memory (blank ones skipped); ``source`` names them in errors.

    Raises:
        ValueError: no non-blank sentence, a ``vocab_size`` not above the special and
            user-defined pieces, one above what the text supports (the message gives the
            limit), or another sentencepiece failure (its message).
    """
    import sentencepiece as spm

    lines = [ln for ln in lines if ln.strip()]
    if max_sentences:
        lines = lines[:max_sentences]
    if not lines:
        raise ValueError(f"{source}: no non-blank line to train a sentencepiece model on")
    specials = 4 + len(list(user_defined_symbols))
    if int(vocab_size) <= specials:
        raise ValueError(f"{source}: vocab_size must exceed the {specials} special and user-defined pieces, "
                         f"got {vocab_size}")
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=buf, vocab_size=int(vocab_size), model_type=model_type,
            character_coverage=character_coverage, user_defined_symbols=list(user_defined_symbols),
            unk_id=0, bos_id=1, eos_id=2, pad_id=3, num_threads=1, minloglevel=2)
    except RuntimeError as exc:
        limit = _VOCAB_LIMIT.search(str(exc))
        if limit:
            raise ValueError(f"{source}: sentencepiece training failed with vocab_size={vocab_size}: more than "
                             f"this text supports (at most {limit.group(2)} {model_type} pieces from "
                             f"{len(lines)} lines); lower vocab_size or give more text") from None
        raise ValueError(f"{source}: sentencepiece training failed with vocab_size={vocab_size}: {exc}") from None
    atomic_write_bytes(model_path, buf.getvalue())
    _log.info("%s: trained a %s sentencepiece model with %d pieces on %d lines -> %s", source, model_type,
              vocab_size, len(lines), model_path)
    return Path(model_path)


class TextDataset(SizedDataset):
    """Lines of a text file, tokenised by a sentencepiece model.

    Args:
        path: the text file (one sentence per line, UTF-8).
        model: a sentencepiece ``.model`` path or a loaded ``SentencePieceProcessor``.
        max_tokens_per_item: cap on an item's tokens (``bos``/``eos`` included); None: no cap.
        crop: where a capped line's window starts: ``"random"`` (from ``(seed, epoch, index)``)
            or ``"start"``.
        add_bos, add_eos: put the model's ``bos``/``eos`` id around each line.
        seed: base seed of the random crop.

    Attributes:
        sizes: tokens per item after the cap.
        lines: 1-based line of each item in the file.
        vocab_size, pad_id, bos_id, eos_id: of the model (``pad_id`` is -1 without a pad piece).

    Raises:
        FileNotFoundError / FormatError: missing file, a line that is not UTF-8 (names the line),
            a model that does not load.
        ValueError: bad options, a ``bos``/``eos`` the model lacks, or no non-blank line.
    """

    def __init__(self, path: str | Path, model: Any, *, max_tokens_per_item: int | None = None,
                 crop: Literal["random", "start"] = "random", add_bos: bool = False, add_eos: bool = True,
                 seed: int = 0) -> None:
        self.path = Path(path)
        self.sp = load_sentencepiece(model)
        if crop not in ("random", "start"):
            raise ValueError(f"crop must be 'random' or 'start', got {crop!r}")
        specials = int(add_bos) + int(add_eos)
        if max_tokens_per_item is not None and max_tokens_per_item <= specials:
            raise ValueError(f"max_tokens_per_item must exceed the {specials} bos/eos token(s), "
                             f"got {max_tokens_per_item}")
        self.vocab_size = int(self.sp.GetPieceSize())
        self.pad_id, self.bos_id, self.eos_id = int(self.sp.pad_id()), int(self.sp.bos_id()), int(self.sp.eos_id())
        for flag, name, value in ((add_bos, "bos", self.bos_id), (add_eos, "eos", self.eos_id)):
            if flag and value < 0:
                raise ValueError(f"add_{name}=True but the sentencepiece model has no {name} piece")
        self.max_tokens_per_item, self.crop = max_tokens_per_item, crop
        self.add_bos, self.add_eos = add_bos, add_eos
        self.seed = check_seed(seed)
        self.epoch = 1

        rows = read_lines(self.path)
        keep = [i for i, ln in enumerate(rows) if ln.strip()]
        if len(keep) < len(rows):
            _log.info("%s: skipped %d blank line(s) of %d", self.path, len(rows) - len(keep), len(rows))
        if not keep:
            raise ValueError(f"{self.path}: no non-blank line")
        encoded = self.sp.encode([rows[i] for i in keep], out_type=int)
        self.lines = np.asarray(keep, dtype=np.int64) + 1
        self._tokens = [np.asarray(ids, dtype=np.int64) for ids in encoded]
        full = np.asarray([len(t) + specials for t in self._tokens], dtype=np.int64)
        self.sizes = np.minimum(full, max_tokens_per_item) if max_tokens_per_item else full
        self._stem = self.path.stem
        _log.info("%s: %d lines, %d tokens (vocab %d), max_tokens_per_item=%s", self.path, len(keep),
                  int(full.sum()), self.vocab_size, max_tokens_per_item)

    def __len__(self) -> int:
        return len(self._tokens)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (1-based) whose random crops to draw."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        body = self._tokens[index]
        room = int(self.sizes[index]) - int(self.add_bos) - int(self.add_eos)
        start = 0
        if len(body) > room and self.crop == "random":
            start = randint(item_generator(self.seed, self.epoch, index), 0, len(body) - room + 1)
        ids = body[start:start + room].tolist()
        if self.add_bos:
            ids = [self.bos_id] + ids
        if self.add_eos:
            ids = ids + [self.eos_id]
        line = int(self.lines[index])
        return {"id": f"{self._stem}:{line}", "index": int(index), "line": line, "offset": start,
                "tokens": torch.tensor(ids, dtype=torch.long)}

    def decode(self, tokens: torch.Tensor | list[int]) -> str:
        """The text of token ids (specials dropped)."""
        ids = tokens.tolist() if isinstance(tokens, torch.Tensor) else list(tokens)
        return self.sp.decode([i for i in ids if i not in (self.bos_id, self.eos_id, self.pad_id)])

    def collater(self) -> TextCollater:
        """A :class:`TextCollater` padding with the model's pad id (0 when it has none; see the mask)."""
        return TextCollater(pad_id=self.pad_id if self.pad_id >= 0 else 0)


class TextCollater:
    """Pad token sequences.

    Batch: ``{"id": list[str], "index": (B,) int64, "tokens": (B, L) int64 padded with pad_id,
    "lengths": (B,) int64, "padding_mask": (B, L) bool (True = padded)}``.

    Args:
        pad_id: id written into the padding.
    """

    def __init__(self, pad_id: int = 0) -> None:
        self.pad_id = int(pad_id)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        if not items:
            raise ValueError("cannot collate an empty list of items")
        tokens, lengths = pad_list([it["tokens"] for it in items], self.pad_id)
        return {"id": [it["id"] for it in items],
                "index": torch.tensor([int(it["index"]) for it in items], dtype=torch.long),
                "tokens": tokens, "lengths": lengths, "padding_mask": padding_mask(lengths, tokens.shape[1])}
