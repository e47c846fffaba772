"""What utterance topic labels carry: NMI and purity against reference utterance labels.

For topic labels ``z`` and a reference labelling ``y`` (text theme, speaker, voice gender, ...)
of the same utterances, with ``p(y, z)`` their joint distribution:

- NMI            = ``I(y; z) / ((H(y) + H(z)) / 2)`` (the arithmetic normalisation, scikit-learn's
  ``normalized_mutual_info_score`` default; 1 when both labellings are constant, 0 when
  ``I = 0`` otherwise);
- purity         = ``Σ_z max_y p(y, z)``: accuracy when every topic is mapped to its most
  frequent reference class;
- inverse purity = ``Σ_y max_z p(y, z)``: the same with every class mapped to its most
  frequent topic.

References come either from label files that follow the topics' rows (``<split>.spk`` ...), or
from the embedded corpus (:func:`corpus_references`): for every manifest row it finds the
corpus utterance with the same audio file and reads its ``topic``, ``spk`` and ``style`` labels,
plus the speaker's ``gender`` and espeak ``voice`` variant from ``speakers.json``. Rows without
a value for a reference (keyword clips have no theme, noise clips no speaker) are left out of
that reference's scores.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from speechssl.cluster.metrics import joint_counts, label_quality
from speechssl.data.manifest import FormatError, Manifest, read_labels, read_manifest, validate_manifest
from speechssl.safe_io import load_json

__all__ = ["topic_scores", "corpus_references", "evaluate_topics", "read_topics", "CORPUS_REFERENCES"]

#: References :func:`corpus_references` reads, in table order.
CORPUS_REFERENCES = ("topic", "spk", "gender", "voice", "style")
_NO_SPEAKER = "none"  # .spk of the corpus's noise-only clips


def _ids(values: Sequence[str]) -> np.ndarray:
    return np.unique(np.asarray(values, dtype=str), return_inverse=True)[1].astype(np.int64)


def topic_scores(topics: Sequence[str], reference: Sequence[str]) -> dict[str, float | int]:
    """NMI, purity and inverse purity of ``topics`` against ``reference`` (same length, any symbols).

    Returns:
        ``nmi``, ``purity``, ``inverse_purity``, ``mutual_info``, ``h_reference``, ``h_topic``
        (nats), ``n_rows``, ``n_topics``, ``n_classes``.

    Raises:
        ValueError: the sequences differ in length or are empty.
    """
    if len(topics) != len(reference):
        raise ValueError(f"got {len(topics)} topic labels but {len(reference)} reference labels")
    if not topics:
        raise ValueError("no rows to score")
    counts, _, _ = joint_counts([_ids(reference)], [_ids(topics)])  # (classes, topics)
    q = label_quality(counts)
    h_ref, h_topic, mi = q.phone_entropy, q.unit_entropy, q.mutual_info
    if q.n_phones == q.n_units == 1:
        nmi = 1.0
    elif mi <= 0 or (h_ref + h_topic) <= 0:
        nmi = 0.0
    else:
        nmi = mi / ((h_ref + h_topic) / 2)
    return {"nmi": float(nmi), "purity": q.phone_purity, "inverse_purity": q.cluster_purity, "mutual_info": mi,
            "h_reference": h_ref, "h_topic": h_topic, "n_rows": len(topics), "n_topics": q.n_units,
            "n_classes": q.n_phones}


def corpus_references(corpus_dir: str | Path, manifest: str | Path | Manifest,
                      names: Sequence[str] = CORPUS_REFERENCES) -> dict[str, list[str | None]]:
    """Reference labels of every row of ``manifest`` from the embedded corpus at ``corpus_dir``.

    Every ``<subset>/<split>.tsv`` of the corpus is read with its ``.spk``, ``.topic`` and
    ``.style`` files (where they exist) and matched to the manifest's rows by resolved audio path;
    ``gender`` and ``voice`` come from ``speakers.json``.

    Returns:
        reference name → one value per manifest row (None where the corpus has none).

    Raises:
        FileNotFoundError: no ``speakers.json`` (not a corpus directory).
        ValueError: a manifest row is not a corpus utterance, or an unknown reference name.
    """
    corpus_dir = Path(corpus_dir)
    unknown = set(names) - set(CORPUS_REFERENCES)
    if unknown:
        raise ValueError(f"unknown corpus references {sorted(unknown)}; choose from {', '.join(CORPUS_REFERENCES)}")
    spk_path = corpus_dir / "speakers.json"
    if not spk_path.is_file():
        raise FileNotFoundError(f"{spk_path} not found: --corpus must be a directory from `speechssl corpus synth`")
    entries = load_json(spk_path, "the corpus's speakers.json (a list of speaker objects)")
    if not isinstance(entries, list) or not all(isinstance(s, dict) and {"id", "gender", "variant"} <= set(s)
                                                for s in entries):
        raise FormatError(f"{spk_path}: expected a list of speaker objects with id, gender and variant, found "
                          f"{type(entries).__name__}; is --corpus a directory from `speechssl corpus synth`?")
    speakers = {s["id"]: s for s in entries}
    by_path: dict[Path, dict[str, str]] = {}
    for tsv in sorted(corpus_dir.glob("*/*.tsv")):
        if tsv.parent.name == "pretrain":
            continue  # a view over the other subsets' audio
        m = read_manifest(tsv)
        columns = {}
        for name in ("spk", "topic", "style"):
            path = tsv.with_suffix(f".{name}")
            if path.is_file():
                columns[name] = read_labels(path, expected_rows=len(m))
        for i in range(len(m)):
            by_path[m.audio_path(i).resolve()] = {k: v[i] for k, v in columns.items()}
    # rows are matched by path (no audio read): root line, row format and duplicates checked
    rows = manifest if isinstance(manifest, Manifest) else validate_manifest(manifest, check_files=False)
    out: dict[str, list[str | None]] = {name: [] for name in names}
    for i in range(len(rows)):
        path = rows.audio_path(i).resolve()
        labels = by_path.get(path)
        if labels is None:
            raise ValueError(f"{manifest}: row {i + 2} ({rows.paths[i]}) is not an utterance of the corpus at "
                             f"{corpus_dir}; pass the corpus the manifest was made from")
        spk = labels.get("spk")
        speaker = speakers.get(spk) if spk not in (None, _NO_SPEAKER) else None
        values = {"topic": labels.get("topic"), "style": labels.get("style"),
                  "spk": spk if speaker is not None else None,
                  "gender": speaker["gender"] if speaker else None,
                  "voice": speaker["variant"] if speaker else None}
        for name in names:
            out[name].append(values[name] or None)
    return out


def read_topics(topic_path: str | Path, expected_rows: int | None = None) -> list[str]:
    """A ``<split>.topic`` file: one non-negative integer topic id per row (file and line named otherwise).

    Raises:
        FormatError: an empty file, a row that is not one integer >= 0, or (``expected_rows``)
            another number of rows than the manifest.
    """
    topics = read_labels(topic_path, expected_rows=expected_rows)
    if not topics:
        raise FormatError(f"{topic_path} is empty: expected one topic id per manifest row")
    for lineno, row in enumerate(topics, start=1):
        token = row.strip()
        if not token.isdigit():
            raise FormatError(f"{topic_path}:{lineno}: expected one topic id (an integer >= 0), found {row[:40]!r}")
    return [t.strip() for t in topics]


def evaluate_topics(topic_path: str | Path, references: dict[str, Sequence[str | None]]) -> list[dict]:
    """Scores of the topic file ``topic_path`` against each reference (rows without a value skipped).

    Raises:
        FormatError: a reference has another number of rows than the topic file, or it is empty.
    """
    topics = read_topics(topic_path)
    results = []
    for name, values in references.items():
        if len(values) != len(topics):
            raise FormatError(f"{topic_path} has {len(topics)} rows but reference {name!r} has {len(values)}; "
                              "both must follow the same manifest")
        keep = [i for i, v in enumerate(values) if v is not None and v != ""]
        if not keep:
            results.append({"reference": name, "nmi": math.nan, "purity": math.nan, "inverse_purity": math.nan,
                            "n_rows": 0})
            continue
        scores = topic_scores([topics[i].strip() for i in keep], [str(values[i]) for i in keep])
        results.append({"reference": name, **scores})
    return results
