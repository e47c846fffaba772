"""LDA topics over unit sequences (HuBERTopic): each utterance's units are a bag-of-words document.

Fitting is gensim's online variational Bayes ``LdaModel`` (Hoffman et al. 2010) with a fixed
``random_state``; this module only turns label files into documents, saves the fitted model
without pickle and writes the labels.

Documents: row ``i`` of ``<split>.km`` (unit ids per frame) becomes the words ``"u"`` of its
units (runs of one unit collapsed first with ``merge_repeats``) plus, with ``ngram = n > 1``, the
unit n-grams of orders 2..n as words ``"u_v"``, ``"u_v_w"``... The vocabulary is the words of the
fit split, sorted by order then unit ids; other splits drop words outside it.

Outputs under ``out_dir`` (all written atomically):

- ``lda.safetensors``: ``topic_word`` ``(K, V)`` float32, gensim's variational parameter λ
  (unnormalised topic-word Dirichlet; ``topic_word / topic_word.sum(1)`` is the topic-word
  distribution), ``alpha`` ``(K,)``, ``eta`` ``(V,)``; metadata: ``vocab`` (JSON list of
  words), ``options`` (JSON) and ``fingerprint``. :meth:`TopicModel.load` rebuilds a gensim
  model from it that infers exactly what the fitted one does.
- ``<split>.topic``: one topic id per row (the most probable topic of the row's document);
- ``<split>.topic_dist.npy``: ``(N, K)`` float32 topic distributions (normalised variational
  γ), loadable with ``numpy.load(..., allow_pickle=False)``;
- ``dict.topic.txt``: topics ``0 .. K-1`` with their row counts on the fit split;
- ``lda.json``: the fingerprint of the fit (label file digest + options) and of every written
  split, for resuming (:mod:`speechssl.fingerprint`): a rerun with the same inputs skips what
  is done; other inputs (changed labels or options) refit and rewrite every split, with a log
  line naming what changed.
"""
from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from speechssl.atomic import atomic_open, atomic_write_bytes, atomic_write_text
from speechssl.data.manifest import Dictionary, FormatError, read_labels, read_manifest, write_dict, write_labels
from speechssl.fingerprint import file_sha256, json_digest, same_inputs
from speechssl.log import progress_bar

__all__ = ["LdaOptions", "TopicModel", "unit_documents", "build_vocabulary", "bag_of_words", "fit_lda",
           "file_digest", "run_lda", "MODEL_FILE", "STATE_FILE"]

_log = logging.getLogger(__name__)

MODEL_FILE = "lda.safetensors"
STATE_FILE = "lda.json"
_FORMAT = "speechssl-lda-1"


@dataclass
class LdaOptions:
    """Settings of the documents and of gensim's ``LdaModel`` (its argument names where they exist)."""

    num_topics: int = 8  # K
    ngram: int = 1  # unit n-grams of orders 1..ngram are words
    merge_repeats: bool = False  # collapse runs of one unit before counting
    passes: int = 10  # passes over the fit split
    iterations: int = 50  # variational E-step iterations per document
    chunksize: int = 2000  # documents per online update
    alpha: str | float = "symmetric"  # document-topic prior: symmetric, asymmetric, auto or a number
    eta: str | float = "symmetric"  # topic-word prior: symmetric, auto or a number
    decay: float = 0.5  # κ, online learning-rate decay
    offset: float = 1.0  # τ0, online learning-rate offset
    seed: int = 0  # gensim's random_state

    def validate(self) -> None:
        """Raise ValueError naming the option."""
        for name in ("num_topics", "ngram", "passes", "iterations", "chunksize"):
            if getattr(self, name) < 1:
                raise ValueError(f"LDA option {name} must be >= 1, got {getattr(self, name)}")
        if self.num_topics < 2:
            raise ValueError(f"LDA option num_topics must be >= 2, got {self.num_topics}")
        for name, allowed in (("alpha", ("symmetric", "asymmetric", "auto")), ("eta", ("symmetric", "auto"))):
            value = getattr(self, name)
            if isinstance(value, str) and value not in allowed:
                raise ValueError(f"LDA option {name} must be one of {', '.join(allowed)} or a number, got {value!r}")
            if not isinstance(value, str) and value <= 0:
                raise ValueError(f"LDA option {name} must be positive, got {value}")

    def gensim_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``gensim.models.LdaModel`` (training settings, no corpus)."""
        return dict(num_topics=self.num_topics, passes=self.passes, iterations=self.iterations,
                    chunksize=self.chunksize, alpha=self.alpha, eta=self.eta, decay=self.decay,
                    offset=self.offset, random_state=self.seed, eval_every=None, update_every=1,
                    dtype=np.float32)


def parse_prior(value: str) -> str | float:
    """``"symmetric"`` etc. stay strings; numbers become floats (for command-line options)."""
    try:
        return float(value)
    except ValueError:
        return value


# --- documents ---------------------------------------------------------------------------


def unit_documents(rows: Sequence[str], *, ngram: int = 1, merge_repeats: bool = False,
                   source: str | Path = "<rows>") -> list[list[str]]:
    """Words of each row of a unit label file (see the module docstring).

    Raises:
        FormatError: a token is not a non-negative integer (``source:line`` named).
    """
    docs = []
    for lineno, row in enumerate(rows, start=1):
        try:
            units = [int(t) for t in row.split()]
        except ValueError:
            raise FormatError(f"{source}:{lineno}: unit labels must be integers, got {row[:40]!r}") from None
        if units and min(units) < 0:
            raise FormatError(f"{source}:{lineno}: unit labels must be >= 0, got {min(units)}")
        if merge_repeats:
            units = [u for i, u in enumerate(units) if i == 0 or u != units[i - 1]]
        words = [str(u) for u in units]
        for n in range(2, ngram + 1):
            words += ["_".join(map(str, units[i:i + n])) for i in range(len(units) - n + 1)]
        docs.append(words)
    return docs


def _word_key(word: str) -> tuple[int, tuple[int, ...]]:
    parts = tuple(int(p) for p in word.split("_"))
    return len(parts), parts


def build_vocabulary(docs: Sequence[Sequence[str]]) -> list[str]:
    """Distinct words, unigrams first, each order sorted by its unit ids."""
    return sorted({w for doc in docs for w in doc}, key=_word_key)


def bag_of_words(docs: Sequence[Sequence[str]], vocab: Sequence[str]) -> list[list[tuple[int, int]]]:
    """gensim bag-of-words ``[(word id, count), ...]`` per document (sorted ids; unknown words dropped)."""
    index = {w: i for i, w in enumerate(vocab)}
    out = []
    for doc in docs:
        ids = np.fromiter((index[w] for w in doc if w in index), dtype=np.int64)
        uniq, counts = np.unique(ids, return_counts=True)
        out.append([(int(i), int(c)) for i, c in zip(uniq, counts)])
    return out


class _Corpus:
    """A list of bag-of-words documents that ticks a progress bar as gensim reads it."""

    def __init__(self, bows: Sequence[list[tuple[int, int]]], bar: Any) -> None:
        self.bows, self.bar = bows, bar

    def __len__(self) -> int:
        return len(self.bows)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for doc in self.bows:
            yield doc
            self.bar.update(1)


@contextlib.contextmanager
def _quiet_gensim() -> Iterator[None]:
    """gensim logs every chunk at INFO; keep it at WARNING unless we are logging DEBUG."""
    logger = logging.getLogger("gensim")
    old = logger.level
    if not _log.isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(old)


def _gensim() -> Any:
    try:
        from gensim.models import LdaModel
    except ImportError:
        raise RuntimeError("speechssl cluster lda needs gensim: pip install 'gensim>=4.3,<5'") from None
    return LdaModel


# --- the model ---------------------------------------------------------------------------


@dataclass
class TopicModel:
    """A fitted LDA model as plain arrays (no pickle).

    Attributes:
        topic_word: ``(K, V)`` float32 variational Dirichlet parameters λ of each topic's words.
        alpha: ``(K,)`` float32 document-topic prior.
        eta: ``(V,)`` float32 topic-word prior.
        vocab: the ``V`` words.
        options: the settings it was fitted with.
        fingerprint: digest of the fit's inputs (label file + options).
    """

    topic_word: np.ndarray
    alpha: np.ndarray
    eta: np.ndarray
    vocab: list[str]
    options: LdaOptions
    fingerprint: str = ""

    @property
    def num_topics(self) -> int:
        return int(self.topic_word.shape[0])

    def topic_word_distribution(self) -> np.ndarray:
        """``(K, V)`` rows summing to 1 (gensim ``get_topics()``)."""
        return self.topic_word / self.topic_word.sum(axis=1, keepdims=True)

    @classmethod
    def from_gensim(cls, lda: Any, vocab: Sequence[str], options: LdaOptions, fingerprint: str = "") -> "TopicModel":
        return cls(topic_word=np.asarray(lda.state.get_lambda(), dtype=np.float32),
                   alpha=np.asarray(lda.alpha, dtype=np.float32), eta=np.asarray(lda.eta, dtype=np.float32),
                   vocab=list(vocab), options=options, fingerprint=fingerprint)

    def to_gensim(self) -> Any:
        """A gensim ``LdaModel`` with this state (its ``random_state`` freshly seeded with ``options.seed``)."""
        LdaModel = _gensim()
        with _quiet_gensim():
            lda = LdaModel(num_topics=self.num_topics, id2word=dict(enumerate(self.vocab)), alpha=self.alpha.copy(),
                           eta=self.eta.copy(), random_state=self.options.seed, dtype=np.float32)
        from gensim.matutils import dirichlet_expectation

        lda.state.sstats[...] = self.topic_word - self.eta  # get_lambda() = eta + sstats (up to rounding)
        # expElogbeta from λ itself, as the fitted model's last sync_state computed it: inference is exact
        lda.sync_state(dirichlet_expectation(self.topic_word))
        lda.random_state = np.random.RandomState(self.options.seed)  # the constructor drew from it
        return lda

    def infer(self, bows: Sequence[list[tuple[int, int]]]) -> np.ndarray:
        """``(N, K)`` float32 topic distributions of documents (normalised variational γ).

        Deterministic: the γ initialisation draws from a generator seeded with ``options.seed``.
        """
        lda = self.to_gensim()
        out = np.zeros((len(bows), self.num_topics), dtype=np.float32)
        step = self.options.chunksize
        with _quiet_gensim():
            for start in range(0, len(bows), step):
                gamma, _ = lda.inference(list(bows[start:start + step]))
                out[start:start + step] = gamma / gamma.sum(axis=1, keepdims=True)
        return out

    def save(self, path: str | Path) -> None:
        """Write ``lda.safetensors`` (atomically)."""
        from safetensors.numpy import save

        tensors = {"topic_word": np.ascontiguousarray(self.topic_word, dtype=np.float32),
                   "alpha": np.ascontiguousarray(self.alpha, dtype=np.float32),
                   "eta": np.ascontiguousarray(self.eta, dtype=np.float32)}
        metadata = {"format": _FORMAT, "vocab": json.dumps(self.vocab), "options": json.dumps(asdict(self.options)),
                    "fingerprint": self.fingerprint}
        atomic_write_bytes(path, save(tensors, metadata=metadata))

    @classmethod
    def load(cls, path: str | Path) -> "TopicModel":
        """Read a model written by :meth:`save` (never unpickles).

        Raises:
            FileNotFoundError / ValueError: missing file, or not a speechssl LDA model (named).
        """
        from safetensors import SafetensorError, safe_open

        from speechssl.safe_io import safetensors_refusal

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"LDA model not found: {path}")
        try:
            with safe_open(str(path), framework="np") as f:
                meta = f.metadata() or {}
                if meta.get("format") != _FORMAT:
                    raise ValueError(f"{path}: not a speechssl LDA model (format {meta.get('format')!r}, "
                                     f"expected {_FORMAT!r})")
                arrays = {k: f.get_tensor(k) for k in ("topic_word", "alpha", "eta")}
        except SafetensorError as exc:  # not a ValueError: would reach the user as a traceback
            raise safetensors_refusal(path, exc, "an LDA model written by `speechssl cluster lda`") from None
        return cls(vocab=json.loads(meta["vocab"]), options=LdaOptions(**json.loads(meta["options"])),
                   fingerprint=meta.get("fingerprint", ""), **arrays)


def fit_lda(bows: Sequence[list[tuple[int, int]]], vocab: Sequence[str], options: LdaOptions, *,
            progress: bool = False, fingerprint: str = "") -> TopicModel:
    """Fit gensim's ``LdaModel`` on bag-of-words documents.

    Raises:
        ValueError: no document has a word.
    """
    options.validate()
    if not vocab or not any(bows):
        raise ValueError("no words to fit LDA on: every document is empty")
    LdaModel = _gensim()
    with progress_bar(total=len(bows) * options.passes, desc="LDA", unit="doc", disable=not progress) as bar, \
            _quiet_gensim():
        lda = LdaModel(corpus=_Corpus(bows, bar), id2word=dict(enumerate(vocab)), **options.gensim_kwargs())
    return TopicModel.from_gensim(lda, vocab, options, fingerprint)


# --- files -------------------------------------------------------------------------------


#: sha256 of a file's bytes (the shared fingerprint helper).
file_digest = file_sha256


def _digest(obj: Any) -> str:
    return json_digest(obj, 16)


def _read_rows(path: Path, manifest_dir: Path | None, split: str) -> list[str]:
    expected = None
    if manifest_dir is not None:
        expected = len(read_manifest(manifest_dir / f"{split}.tsv"))
    rows = read_labels(path, expected_rows=expected)
    if not rows:
        raise FormatError(f"{path} is empty: expected one row of unit ids per manifest row")
    return rows


def run_lda(label_dir: str | Path, out_dir: str | Path, splits: Sequence[str], *, fit_split: str = "train",
            label: str = "km", topic_label: str = "topic", options: LdaOptions | None = None,
            manifest_dir: str | Path | None = None, overwrite: bool = False, progress: bool = False) -> dict[str, Any]:
    """Fit LDA on ``<label_dir>/<fit_split>.<label>`` and write topics of every split (resumable).

    Args:
        label_dir: directory holding ``<split>.<label>`` unit files.
        out_dir: where the model, topics and state go (may equal ``label_dir``).
        splits: splits to label (the fit split need not be among them).
        fit_split: split the model is fitted on.
        label: extension of the unit files.
        topic_label: extension of the topic files (``<split>.<topic_label>``, ``dict.<topic_label>.txt``).
        options: LDA settings.
        manifest_dir: if given, each label file must have as many rows as ``<split>.tsv`` there.
        overwrite: refit and rewrite even if ``out_dir`` holds results of these inputs (results
            of other inputs are always replaced, with a log line).
        progress: show a progress bar.

    Returns:
        the state written to ``lda.json``.

    Raises:
        FileNotFoundError: a label file or manifest is missing.
        FormatError: an empty label file, a row count that differs from the manifest, a non-integer unit.
        ValueError: bad options.
    """
    options = options or LdaOptions()
    options.validate()
    label_dir, out_dir = Path(label_dir), Path(out_dir)
    manifest = Path(manifest_dir) if manifest_dir is not None else None
    fit_path = label_dir / f"{fit_split}.{label}"
    if not fit_path.is_file():
        raise FileNotFoundError(f"label file not found: {fit_path} (the fit split {fit_split!r})")
    fit_fp = _digest({"labels": file_digest(fit_path), "options": asdict(options), "format": _FORMAT})
    state_path, model_path = out_dir / STATE_FILE, out_dir / MODEL_FILE
    state: dict[str, Any] = {}
    if state_path.is_file():
        from speechssl.safe_io import load_json

        state = load_json(state_path, "the LDA run state written by `speechssl cluster lda`")
        if not isinstance(state, dict):
            raise ValueError(f"{state_path}: expected a JSON object (the LDA run state), found "
                             f"{type(state).__name__}; delete it to fit again")
        if overwrite or not same_inputs(state.get("fingerprint"), fit_fp, f"{state_path} (fit on {fit_path})",
                                        action="fitting LDA again and rewriting every split"):
            state = {}
    model = None
    if model_path.is_file() and state.get("fingerprint") == fit_fp:
        model = TopicModel.load(model_path)
        if model.fingerprint != fit_fp:
            model = None
    if model is not None:
        _log.info("LDA model %s matches the inputs (fingerprint %s): not refitting", model_path, fit_fp)
    else:
        rows = _read_rows(fit_path, manifest, fit_split)
        docs = unit_documents(rows, ngram=options.ngram, merge_repeats=options.merge_repeats, source=fit_path)
        vocab = build_vocabulary(docs)
        bows = bag_of_words(docs, vocab)
        _log.info("fitting LDA: %d documents of %s, %d words (n-grams up to %d), K=%d, %d passes",
                  len(docs), fit_path, len(vocab), options.ngram, options.num_topics, options.passes)
        model = fit_lda(bows, vocab, options, progress=progress, fingerprint=fit_fp)
        model.save(model_path)
        state = {"fingerprint": fit_fp, "options": asdict(options), "fit": {"split": fit_split, "labels": str(fit_path),
                 "documents": len(docs), "vocabulary": len(vocab)}, "splits": {}}
        atomic_write_text(state_path, json.dumps(state, indent=2) + "\n")
        _log.info("wrote %s", model_path)
    for split in dict.fromkeys([fit_split, *splits]):
        path = label_dir / f"{split}.{label}"
        if not path.is_file():
            raise FileNotFoundError(f"label file not found: {path} (split {split!r})")
        split_fp = _digest({"model": fit_fp, "labels": file_digest(path), "topic_label": topic_label})
        topic_path = out_dir / f"{split}.{topic_label}"
        dist_path = out_dir / f"{split}.{topic_label}_dist.npy"
        done = state.setdefault("splits", {}).get(split, {})
        if done.get("fingerprint") == split_fp and topic_path.is_file() and dist_path.is_file():
            _log.info("%s: topics already written (%s)", split, topic_path)
            continue
        rows = _read_rows(path, manifest, split)
        docs = unit_documents(rows, ngram=options.ngram, merge_repeats=options.merge_repeats, source=path)
        bows = bag_of_words(docs, model.vocab)
        empty = sum(1 for b in bows if not b)
        if empty:
            _log.warning("%s: %d of %d rows have no known unit; they get the prior's topic", path, empty, len(bows))
        dist = model.infer(bows)
        topics = dist.argmax(axis=1)
        with atomic_open(dist_path, "wb") as f:
            np.save(f, dist, allow_pickle=False)
        write_labels(topic_path, [str(int(t)) for t in topics])
        counts = np.bincount(topics, minlength=model.num_topics)
        if split == fit_split:
            write_dict(out_dir / f"dict.{topic_label}.txt",
                       Dictionary([str(k) for k in range(model.num_topics)], [int(c) for c in counts]))
        state["splits"][split] = {"fingerprint": split_fp, "labels": str(path), "rows": len(rows),
                                  "topics_used": int((counts > 0).sum()), "empty_rows": empty}
        atomic_write_text(state_path, json.dumps(state, indent=2) + "\n")
        _log.info("%s: %d rows -> %s (%d of %d topics used)", split, len(rows), topic_path,
                  int((counts > 0).sum()), model.num_topics)
    return state
