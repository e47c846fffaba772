"""Unpaired text for joint speech + text pretraining (SpeechT5), kept apart from evaluation text.

:func:`unpaired_text` reads a corpus folder (the embedded corpus, or any folder of subsets with
``<split>.wrd`` transcripts) and returns two lists of sentences in the transcript form
(upper-case words, as ``.wrd``):

* ``train``: the transcripts of ``<subset>/train.wrd`` (the read sentences of the pretraining
  split), then ``extra`` sentences that no voice of the corpus spoke, drawn from the shipped
  topic grammars (:class:`speechssl.corpus.text.TextBank`);
* ``valid``: ``valid`` more unspoken sentences, none of them in ``train``.

``exclude`` adds the evaluation text of other corpora (the seed-0 evaluation corpus when the
text comes from a seed-1 pretraining corpus).

**Evaluation text stays out.** Every row of every ``.wrd`` file in the corpus that is not a
``train.wrd`` (read valid/test, commands and keywords valid/test, verification, QbE queries and
documents) is evaluation text. A sentence is dropped when it equals such a row or, for rows of
at least :data:`MIN_SPAN_WORDS` words, when one contains the other as a run of whole words, so
neither half of a two-sentence test utterance nor a whole QbE document can appear. Unspoken
sentences are also checked against the training transcripts (never spoken means never spoken).

The draws come from ``numpy.random.default_rng([corpus seed, seed, stream])`` (the corpus seed
from its ``corpus.json``, 0 without one), so the same corpus and options give the same lines.
Nothing in the corpus folder is written or changed; :func:`write_unpaired_text` writes the
lists as ``train.txt`` / ``valid.txt`` (+ ``unpaired.json``) into another folder, atomically.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from speechssl.atomic import atomic_write_text
from speechssl.corpus.labels import words_of
from speechssl.corpus.text import TextBank
from speechssl.data.manifest import read_labels

__all__ = ["UnpairedText", "unpaired_text", "write_unpaired_text", "evaluation_text", "MIN_SPAN_WORDS"]

_log = logging.getLogger(__name__)

#: evaluation rows this long (words) also exclude the sentences they contain or are contained in
MIN_SPAN_WORDS = 3
_STREAM = 0x7E47  # the unpaired-text stream of the corpus seed


@dataclass
class UnpairedText:
    """What :func:`unpaired_text` returns.

    Attributes:
        train, valid: sentences (upper-case words joined by spaces).
        stats: counts of what was kept and dropped, for ``unpaired.json``.
    """

    train: list[str]
    valid: list[str]
    stats: dict[str, Any] = field(default_factory=dict)


def _wrd_files(corpus: Path) -> list[Path]:
    """Every ``<split>.wrd`` of the corpus's subset folders (and of its top level), sorted."""
    files = sorted(corpus.glob("*.wrd")) + sorted(corpus.glob("*/*.wrd"))
    return [f for f in files if f.parent.name != "pretrain"]


class _Excluder:
    """Membership of a sentence in a set of rows, exactly or as a run of whole words."""

    def __init__(self, rows: list[str]) -> None:
        self.exact = set(rows)
        self.long = [f" {r} " for r in self.exact if len(r.split()) >= MIN_SPAN_WORDS]
        self.index: dict[str, list[int]] = {}  # word -> long rows holding it
        for i, row in enumerate(self.long):
            for w in set(row.split()):
                self.index.setdefault(w, []).append(i)

    def __contains__(self, sentence: str) -> bool:
        if sentence in self.exact:
            return True
        words = sentence.split()
        if not words:
            return False
        padded = f" {sentence} "
        first = words[0]
        for i in self.index.get(first, ()):
            row = self.long[i]
            if padded in row:  # the sentence inside an evaluation row
                return True
        if len(words) >= MIN_SPAN_WORDS:  # an evaluation row inside the sentence
            for i in {i for w in set(words) for i in self.index.get(w, ())}:
                if self.long[i] in padded:
                    return True
        return False


def evaluation_text(corpus: str | Path) -> list[str]:
    """The rows of every ``.wrd`` file of ``corpus`` that is not a ``train.wrd`` (non-blank, in file order)."""
    corpus = Path(corpus)
    rows = []
    for path in _wrd_files(corpus):
        if path.stem != "train":
            rows += [r.strip() for r in read_labels(path) if r.strip()]
    return rows


def _corpus_seed(corpus: Path) -> int:
    card = corpus / "corpus.json"
    if not card.is_file():
        return 0
    try:
        return int(json.loads(card.read_text(encoding="utf-8")).get("seed", 0))
    except (ValueError, TypeError, AttributeError):
        raise ValueError(f"{card}: not a corpus card (expected a JSON object with an integer 'seed')") from None


def unpaired_text(corpus: str | Path, *, subset: str = "read", extra: int = 2000, valid: int = 200,
                  seed: int = 0, max_tries: int = 50, exclude: Sequence[str | Path] = ()) -> UnpairedText:
    """Unpaired text of ``corpus`` (see the module docstring).

    Args:
        corpus: the corpus folder (``speechssl corpus synth --out``).
        subset: the subset whose ``train.wrd`` gives the spoken training sentences (``""``: the
            corpus's top-level ``train.wrd``, as ``corpus import-librispeech`` writes it).
        extra: unspoken sentences added to ``train``.
        valid: unspoken sentences in ``valid``.
        seed: varies the unspoken sentences for the same corpus.
        max_tries: draws allowed per wanted sentence before giving up (the grammar is exhausted).
        exclude: other corpora whose evaluation text must stay out too (e.g. the seed-0
            corpus the downstream tasks test on, when pretraining on a seed-1 corpus).

    Raises:
        FileNotFoundError: no corpus folder (or ``exclude`` folder), or no ``<subset>/train.wrd``.
        ValueError: negative counts, or the grammar cannot give that many new sentences.
    """
    corpus = Path(corpus)
    if not corpus.is_dir():
        raise FileNotFoundError(f"corpus folder not found: {corpus}")
    if extra < 0 or valid < 0 or max_tries < 1:
        raise ValueError(f"extra and valid must be >= 0 and max_tries >= 1, got {extra}, {valid}, {max_tries}")
    train_file = corpus / subset / "train.wrd" if subset else corpus / "train.wrd"
    if not train_file.is_file():
        raise FileNotFoundError(f"{train_file}: no training transcripts (need <subset>/train.wrd; "
                                f"--subset names the folder)")
    eval_rows = evaluation_text(corpus)
    for other in exclude:
        if not Path(other).is_dir():
            raise FileNotFoundError(f"corpus folder to exclude not found: {other}")
        eval_rows += evaluation_text(other)
    evaluation = _Excluder(eval_rows)
    spoken = [r.strip() for f in _wrd_files(corpus) for r in read_labels(f) if r.strip()]
    never = _Excluder(spoken)  # every transcript, train and evaluation

    train: list[str] = []
    seen: set[str] = set()
    dropped_eval = dropped_dup = 0
    for row in read_labels(train_file):
        row = " ".join(row.split())
        if not row:
            continue
        if row in evaluation:
            dropped_eval += 1
        elif row in seen:
            dropped_dup += 1
        else:
            seen.add(row)
            train.append(row)
    n_spoken = len(train)

    bank = TextBank()
    topics = bank.topics
    rng = np.random.default_rng([_corpus_seed(corpus), int(seed), _STREAM])
    drawn: list[str] = []
    wanted = extra + valid
    tries = 0
    while len(drawn) < wanted:
        if tries >= max_tries * max(wanted, 1):
            raise ValueError(f"{corpus}: the topic grammars gave only {len(drawn)} new sentences of the "
                             f"{wanted} asked for (extra={extra}, valid={valid}) in {tries} draws; ask for fewer")
        topic = topics[tries % len(topics)]
        tries += 1
        text = " ".join(words_of(bank.sentence(topic, rng)))
        if not text or text in seen or text in never:
            continue
        seen.add(text)
        drawn.append(text)
    stats = {"corpus": str(corpus), "exclude": [str(e) for e in exclude], "subset": subset, "seed": int(seed),
             "spoken_train": n_spoken, "unspoken_train": extra, "valid": valid, "dropped_as_evaluation": dropped_eval,
             "dropped_duplicates": dropped_dup, "evaluation_rows": len(evaluation.exact), "draws": tries}
    _log.info("%s: unpaired text: %d spoken + %d unspoken training sentences, %d valid (%d evaluation rows "
              "kept out, %d training rows dropped as evaluation text)", corpus, n_spoken, extra, valid,
              len(evaluation.exact), dropped_eval)
    return UnpairedText(train=train + drawn[:extra], valid=drawn[extra:], stats=stats)


def write_unpaired_text(corpus: str | Path, out: str | Path, **kwargs: Any) -> UnpairedText:
    """:func:`unpaired_text` written as ``out/train.txt``, ``out/valid.txt`` and ``out/unpaired.json`` (atomically)."""
    out = Path(out)
    text = unpaired_text(corpus, **kwargs)
    if out.resolve() == Path(corpus).resolve():
        raise ValueError(f"--out {out} is the corpus folder; write unpaired text beside it, not into it")
    for name, lines in (("train", text.train), ("valid", text.valid)):
        atomic_write_text(out / f"{name}.txt", "".join(f"{ln}\n" for ln in lines))
    atomic_write_text(out / "unpaired.json", json.dumps(text.stats, indent=1, sort_keys=True) + "\n")
    return text
