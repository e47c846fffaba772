"""Query-by-example spoken term detection (see the package docstring)."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Optional

import numpy as np
import torch

from speechssl.data.manifest import Manifest, read_labels
from speechssl.downstream import metrics
from speechssl.downstream.featurizer import resolve_layer
from speechssl.downstream.qbe.dtw import dtw_score
from speechssl.downstream.task import DownstreamTaskBase, SplitData, read_subset_labels, subset_split
from speechssl.downstream.vad import FRAME_LENGTH, FRAME_SHIFT, voice_activity
from speechssl.log import progress_bar

__all__ = ["QbEConfig", "QueryByExample"]

_log = logging.getLogger(__name__)


@dataclass
class QbEConfig:
    """Query by example: DTW over one hidden state, no training."""

    subset: str = "qbe"  # corpus subfolder: queries.tsv, docs.tsv, ground_truth.txt
    queries: str = "queries"  # manifest of the spoken queries (with .wrd: the term)
    docs: str = "docs"  # manifest of the searched documents
    ground_truth: str = "ground_truth.txt"  # "<query_id> <doc_id> <0|1>" lines
    layer: Optional[int] = None  # hidden state to search with (else featurizer.layer); None: best on the dev queries
    distance: Literal["cosine_exp", "cosine", "euclidean"] = "cosine_exp"  # s3prl's default
    minmax_norm: bool = True  # min-max normalise each query frame's distances (s3prl)
    feature_norm: bool = True  # standardise every dimension over all queries and documents (s3prl)
    trim_queries: bool = True  # drop leading/trailing silence of the queries (energy detector)
    min_query_s: float = 0.05  # queries shorter than this (after trimming) are left out of the scores
    # (s3prl: 5 frames, i.e. 50 ms at 100 Hz; counted in seconds so every frame rate keeps the same queries)
    p_target: float = 0.0008  # TWV costs (QUESST 2014): beta = c_fa / c_miss * (1 / p_target - 1)
    c_miss: float = 100.0
    c_fa: float = 1.0


class QueryByExample(DownstreamTaskBase):
    """Rank documents for each spoken query by subsequence-DTW cost; MTWV and MAP.

    The queries' terms are split in two halves (alternating over the sorted terms): the
    ``valid`` half picks the hidden state (when ``layer`` is not set), the ``test`` half is
    scored, so no choice is made on the reported queries.
    """

    name = "qbe"
    trains: ClassVar[bool] = False
    scored_unit = "queries"

    def _manifests(self) -> tuple[Manifest, Manifest]:
        return (subset_split(self.ctx.data_dir, self.cfg.subset, self.cfg.queries),
                subset_split(self.ctx.data_dir, self.cfg.subset, self.cfg.docs))

    def load_split(self, split: str) -> SplitData:
        queries, _ = self._manifests()
        terms = [t.strip() for t in read_subset_labels(queries, "wrd")]
        order = sorted(set(terms))
        half = {t: ("valid" if k % 2 == 0 else "test") for k, t in enumerate(order)}
        if split not in ("valid", "test"):
            raise ValueError(f"qbe evaluates the 'valid' and 'test' halves of its queries, not {split!r}")
        keep = [i for i, t in enumerate(terms) if half[t] == split]
        return SplitData(queries, [(i, terms[i]) if i in keep else None for i in range(len(terms))],
                         extra={"rows": keep})

    def _truth(self, queries: Manifest, docs: Manifest) -> np.ndarray:
        path = queries.source.parent / self.cfg.ground_truth
        q_index = {u: i for i, u in enumerate(queries.ids())}
        d_index = {u: i for i, u in enumerate(docs.ids())}
        truth = np.zeros((len(queries), len(docs)), dtype=bool)
        for lineno, line in enumerate(read_labels(path), start=1):
            parts = line.split()
            if len(parts) != 3 or parts[2] not in ("0", "1"):
                raise ValueError(f"{path}:{lineno}: expected '<query_id> <doc_id> <0|1>', got {line!r}")
            if parts[0] not in q_index or parts[1] not in d_index:
                raise ValueError(f"{path}:{lineno}: unknown query or document id in {line!r}")
            truth[q_index[parts[0]], d_index[parts[1]]] = parts[2] == "1"
        return truth

    def _features(self) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]]]:
        """Per layer: query feature arrays ``(T_q, D)`` (trimmed) and document arrays."""
        if not hasattr(self, "_feats"):
            queries, docs = self._manifests()
            up = self.ctx.upstream
            layer = self.cfg.layer if self.cfg.layer is not None else self.ctx.featurizer.layer
            layer = resolve_layer(layer, up.num_layers, "task.layer" if self.cfg.layer is not None else
                                  "featurizer.layer")
            layers = None if layer is None else [layer]
            out = []
            for name, manifest in (("queries", queries), ("docs", docs)):
                per_utt = [[h.numpy() for h in utt] for utt in self._hidden(name, manifest, layers)]
                out.append([[u[l] for u in per_utt] for l in range(len(per_utt[0]))])
            q, d = out
            if self.cfg.trim_queries:
                q = [[self._trim(queries, i, x) for i, x in enumerate(layer)] for layer in q]
            self._feats = (q, d)
            self._layers = list(range(up.num_layers)) if layers is None else layers
        return self._feats

    def _hidden(self, name: str, manifest: Manifest, layers: list[int] | None) -> list[list[torch.Tensor]]:
        from speechssl.downstream.cache import compute_hidden_states

        if self.ctx.cache is not None:
            cached = self.ctx.cache.get(self.ctx.upstream, f"qbe-{name}", manifest, layers)
            return [cached[i] for i in range(len(cached))]
        keep = layers or list(range(self.ctx.upstream.num_layers))
        result: list[list[torch.Tensor]] = [[] for _ in range(len(manifest))]
        for rows, states, lengths in compute_hidden_states(self.ctx.upstream, manifest, keep,
                                                           max_samples=16000 * 60, device=self.ctx.device):
            for b, i in enumerate(rows):
                result[i] = [h[b, :int(lengths[b])].float().cpu() for h in states]
        return result

    def _trim(self, manifest: Manifest, i: int, feats: np.ndarray) -> np.ndarray:
        from speechssl import audio

        act = voice_activity(audio.load_numpy(manifest.audio_path(i)))
        if not act.any():
            return feats
        ds = self.ctx.upstream.downsample_rate
        first, last = np.flatnonzero(act)[[0, -1]]
        start = int(first * FRAME_SHIFT // ds)
        end = int(-(-(last * FRAME_SHIFT + FRAME_LENGTH) // ds))
        trimmed = feats[start:max(end, start + 1)]
        return trimmed if len(trimmed) >= self._min_query_frames() else feats

    def _min_query_frames(self) -> int:
        return max(1, math.ceil(self.cfg.min_query_s * 16000 / self.ctx.upstream.downsample_rate - 1e-9))

    def _scores(self, layer_pos: int, rows: list[int]) -> np.ndarray:
        """``(len(rows), N_docs)`` z-normalised detection scores of the given query rows (NaN
        for a query shorter than ``min_query_s``)."""
        q_all, d_all = self._features()
        qs, ds = [q_all[layer_pos][i] for i in rows], d_all[layer_pos]
        if self.cfg.feature_norm:
            stacked = np.concatenate(q_all[layer_pos] + ds)
            mean, std = stacked.mean(0), np.maximum(stacked.std(0), 1e-9)
            qs = [(q - mean) / std for q in qs]
            ds = [(d - mean) / std for d in ds]
        scores = np.zeros((len(qs), len(ds)))
        bar = progress_bar(qs, desc=f"DTW layer {self._layers[layer_pos]}", leave=False, disable=None)
        for a, q in enumerate(bar):
            if len(q) < self._min_query_frames():
                scores[a] = np.nan
                continue
            scores[a] = [dtw_score(q, d, kind=self.cfg.distance, minmax_norm=self.cfg.minmax_norm) for d in ds]
            scores[a] = (scores[a] - scores[a].mean()) / max(scores[a].std(), 1e-9)
        return scores

    def _metrics(self, scores: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        kept = ~np.isnan(scores).any(1)
        if not kept.any():
            raise ValueError(f"qbe: every query is shorter than task.min_query_s={self.cfg.min_query_s} s")
        if not kept.all():
            _log.warning("qbe: %d of %d queries are shorter than %g s and left out of the scores",
                         int((~kept).sum()), len(kept), self.cfg.min_query_s)
        scores, truth = scores[kept], truth[kept]
        beta = metrics.twv_beta(self.cfg.p_target, self.cfg.c_miss, self.cfg.c_fa)
        value, threshold = metrics.mtwv(scores, truth, beta=beta)
        return {"mtwv": value, "map": metrics.mean_average_precision(scores, truth),
                "mtwv_threshold": threshold if np.isfinite(threshold) else float("nan")}

    def _choose_layer(self) -> int:
        """Position (in the extracted layers) of the hidden state used for scoring."""
        if not hasattr(self, "_chosen"):
            self._features()
            if len(self._layers) == 1:
                self._chosen = 0
            else:
                queries, docs = self._manifests()
                rows = self.split("valid").extra["rows"]
                truth = self._truth(queries, docs)[rows]
                dev = [self._metrics(self._scores(p, rows), truth) for p in range(len(self._layers))]
                self._chosen = max(range(len(dev)), key=lambda p: (dev[p]["mtwv"], dev[p]["map"]))
                self.dev_by_layer = {self._layers[p]: dev[p] for p in range(len(dev))}
                _log.info("qbe: layer %d chosen on the dev queries (MTWV by layer: %s)", self._layers[self._chosen],
                          {k: round(v["mtwv"], 4) for k, v in self.dev_by_layer.items()})
        return self._chosen

    def run_evaluation(self, split: str) -> tuple[dict[str, float], list[Any]]:
        queries, docs = self._manifests()
        rows = self.split(split).extra["rows"]
        pos = self._choose_layer()
        truth = self._truth(queries, docs)[rows]
        scores = self._scores(pos, rows)
        result = {**self._metrics(scores, truth), "layer": float(self._layers[pos]),
                  "queries": float((~np.isnan(scores).any(1)).sum())}
        doc_ids, q_ids = docs.ids(), queries.ids()
        preds = [(q_ids[r], doc_ids[j], float(scores[a, j]), int(truth[a, j]))
                 for a, r in enumerate(rows) if not np.isnan(scores[a]).any() for j in range(len(doc_ids))]
        return result, preds

    def scored_items(self, predictions: list[Any]) -> int:
        return len({p[0] for p in predictions})  # predictions are (query, document) pairs

    def format_prediction(self, split: str, index: int, prediction: Any) -> str:
        q, d, score, hit = prediction
        return f"{q}\t{d}\t{score:.4f}\t{hit}"

    def layer_weights(self, model: Any = None) -> list[float]:
        n = self.ctx.upstream.num_layers
        out = [0.0] * n
        out[self._layers[self._choose_layer()]] = 1.0
        return out
