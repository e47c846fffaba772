"""CTC sequence tasks shared by pr (phones), asr (characters) and sf (characters + slot tags).

The head predicts a distribution over ``<blank>`` + the vocabulary at every upstream frame;
training uses the CTC loss summed over utterances with ``sample_size`` = target tokens
(fairseq's convention). Decoding is greedy (best path: argmax, merge repeats, drop blanks)
or, with ``task.decoder.beam_size > 1``, an LM-free CTC prefix beam search.

The vocabulary is the ``dict.<label>.txt`` beside the manifests when it exists, else the
sorted tokens of the training split; blank is index 0.
"""
from __future__ import annotations

import collections
import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from speechssl.data.manifest import read_dict
from speechssl.downstream import metrics
from speechssl.downstream.heads import FrameHead
from speechssl.downstream.task import DownstreamTaskBase, SplitData, sorted_classes, subset_split

__all__ = ["CTCHeadConfig", "DecoderConfig", "CTCTask", "greedy_decode", "prefix_beam_search", "word_char_counts"]

BLANK = "<blank>"

_log = logging.getLogger(__name__)


@dataclass
class CTCHeadConfig:
    """Per-frame CTC head (see :class:`speechssl.downstream.heads.FrameHead`)."""

    # SUPERB: BiLSTM for ASR/SF (2 x 1024 units), linear for PR. The defaults are sized for
    # CPU runs on the embedded corpus; raise hidden_dim/num_layers for real data on a GPU.
    kind: Literal["lstm", "linear"] = "lstm"
    projector_dim: int = 128  # per-frame projection before the LSTM (0: none)
    hidden_dim: int = 128  # LSTM units per direction
    num_layers: int = 1  # LSTM layers
    dropout: float = 0.1


@dataclass
class DecoderConfig:
    """How CTC outputs become token sequences."""

    beam_size: int = 1  # 1: greedy best path; >1: prefix beam search without a language model


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best-path decoding of ``(B, T, V)`` log-probabilities: argmax, merge repeats, drop blank (0)."""
    best = log_probs.argmax(-1).cpu()
    out = []
    for row, n in zip(best, lengths.tolist()):
        ids = torch.unique_consecutive(row[:n]).tolist()
        out.append([i for i in ids if i != 0])
    return out


def prefix_beam_search(log_probs: torch.Tensor, beam_size: int) -> list[int]:
    """CTC prefix beam search over one utterance's ``(T, V)`` log-probabilities (blank = 0).

    Keeps, for every prefix, the probability of ending in blank and in non-blank, so
    alignments that collapse to the same prefix are summed (Hannun et al. 2014), no LM.
    """
    lp = log_probs.double().cpu()
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}  # (blank, non-blank)
    top = min(beam_size, lp.shape[1])
    for t in range(lp.shape[0]):
        frame = lp[t]
        candidates = set(frame.topk(top).indices.tolist()) | {0}
        nxt: dict[tuple[int, ...], list[float]] = collections.defaultdict(lambda: [-math.inf, -math.inf])
        for prefix, (pb, pnb) in beams.items():
            total = _lse(pb, pnb)
            for c in candidates:
                p = float(frame[c])
                if c == 0:
                    nxt[prefix][0] = _lse(nxt[prefix][0], total + p)
                    continue
                new = prefix + (c,)
                if prefix and prefix[-1] == c:
                    nxt[new][1] = _lse(nxt[new][1], pb + p)          # a blank separated the repeat
                    nxt[prefix][1] = _lse(nxt[prefix][1], pnb + p)   # the repeat merges
                else:
                    nxt[new][1] = _lse(nxt[new][1], total + p)
        beams = dict(sorted(((k, (v[0], v[1])) for k, v in nxt.items()),
                            key=lambda kv: _lse(*kv[1]), reverse=True)[:beam_size])
    return list(max(beams.items(), key=lambda kv: _lse(*kv[1]))[0])


def _lse(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


class CTCTask(DownstreamTaskBase):
    """Base of CTC tasks.

    Subclasses set :attr:`label_ext` and implement :meth:`tokens` (label row → tokens),
    :meth:`text` (tokens → the string scored) and :meth:`ratio_metrics`; configs have
    ``subset``, ``head`` (:class:`CTCHeadConfig`) and ``decoder`` (:class:`DecoderConfig`).
    Every metric is a ratio of sums (edits / reference tokens for error rates), so validation
    logs carry ``num_<m>`` / ``den_<m>`` that :meth:`reduce_logs` divides into ``<m>`` through
    :func:`speechssl.downstream.metrics.rate`, the one definition (no reference tokens: the
    count of insertions, as jiwer), in validation and scoring alike
    (``trainer.best_metric`` can then be ``per``, ``wer``, ``slot_f1``...).
    """

    label_ext: ClassVar[str] = ""
    trainer_defaults: ClassVar[dict[str, Any]] = {
        "max_updates": 500, "max_tokens": 5_000, "optim": {"lr": 2e-3, "weight_decay": 0.0},
        "schedule": {"name": "constant", "warmup_updates": 50}, "validate_every_updates": 100,
        "save_every_updates": 100, "validate_every_epochs": 0, "save_every_epochs": 0, "keep_last": 1,
        "maximize_best_metric": False,
    }

    def tokens(self, row: str) -> list[str]:
        return row.split()

    def text(self, tokens: list[str]) -> str:
        return " ".join(tokens)

    def ratio_metrics(self, hyps: list[str], refs: list[str]) -> dict[str, tuple[float, float]]:
        """``{metric: (numerator, denominator)}`` summed over decoded strings and their
        references, e.g. ``{"per": (edits, reference phones)}``."""
        raise NotImplementedError

    # --- data ---

    def label_rows(self, split: str, manifest: Any) -> list[str]:
        from speechssl.downstream.task import read_subset_labels
        return read_subset_labels(manifest, self.label_ext)

    def dict_tokens(self, directory: Any) -> list[str] | None:
        """The corpus's token inventory (``dict.<label_ext>.txt`` beside the manifests), if any."""
        path = directory / f"dict.{self.label_ext}.txt"
        return read_dict(path).symbols if path.is_file() else None

    @property
    def vocab(self) -> list[str]:
        """``[<blank>, token_1, ...]``: the corpus's inventory, plus any other training token."""
        if not hasattr(self, "_vocab"):
            train = subset_split(self.ctx.data_dir, self.cfg.subset, self.ctx.train_split)
            train_tokens = sorted_classes([t for row in self.label_rows(self.ctx.train_split, train)
                                           for t in self.tokens(row)])
            known = self.dict_tokens(train.source.parent) or []
            seen = set(known)
            self._vocab = [BLANK] + known + [t for t in train_tokens if t not in seen]
        return self._vocab

    def load_split(self, split: str) -> SplitData:
        manifest = subset_split(self.ctx.data_dir, self.cfg.subset, split)
        index = {t: i for i, t in enumerate(self.vocab)}
        targets = []
        for row_no, row in enumerate(self.label_rows(split, manifest), start=1):
            toks = self.tokens(row)
            unknown = [t for t in toks if t not in index]
            if unknown:
                raise ValueError(f"{manifest.source.with_suffix('.' + self.label_ext)}:{row_no}: tokens "
                                 f"{unknown[:5]} are not in the training vocabulary ({len(self.vocab) - 1} tokens)")
            if not toks:
                raise ValueError(f"{manifest.source.with_suffix('.' + self.label_ext)}:{row_no}: empty transcript")
            targets.append([index[t] for t in toks])
        return SplitData(manifest, targets)

    def dataset(self, split: str) -> Any:
        fresh = split not in self._datasets
        ds = super().dataset(split)
        if fresh:
            self._check_feasible(split, ds.full, ds.downsample_rate)
        return ds

    def _check_feasible(self, split: str, frames: list[int], downsample_rate: int) -> None:
        """Raise when over a tenth of the utterances of ``split`` have fewer upstream frames than
        CTC needs (one per target token, plus a blank between repeated tokens); warn when fewer do.

        PyTorch's ``ctc_loss(zero_infinity=True)`` gives such utterances zero loss and zero
        gradient, so a head on a too-slow upstream would silently learn nothing.
        """
        targets = self.split(split).targets
        need = [len(t) + sum(a == b for a, b in zip(t, t[1:])) for t in targets]
        bad = [i for i, (n, f) in enumerate(zip(need, frames)) if f < n]
        if not bad:
            return
        rate = 16000 / downsample_rate
        manifest = self.split(split).manifest
        msg = (f"{self.name} {split}: {len(bad)} of {len(targets)} utterances have fewer {self.ctx.upstream.name} "
               f"frames ({rate:g} per second) than CTC needs for their {self.label_ext} targets (e.g. "
               f"{manifest.ids()[bad[0]]}: {frames[bad[0]]} frames for {need[bad[0]]})")
        if len(bad) > 0.1 * len(targets):
            raise ValueError(msg + "; CTC cannot train on this upstream's frame rate: choose one with more frames "
                                   "per second (e.g. >= 25 Hz for phones, >= 50 Hz for characters)")
        _log.warning("%s; they add no loss and no gradient", msg)

    # --- model ---

    def build_head(self, in_dim: int) -> nn.Module:
        h = self.cfg.head
        return FrameHead(in_dim, len(self.vocab), kind=h.kind, projector_dim=h.projector_dim,
                         hidden_dim=h.hidden_dim, num_layers=h.num_layers, dropout=h.dropout)

    def collate_targets(self, targets: list[list[int]]) -> dict[str, Any]:
        return {"target": torch.tensor([t for seq in targets for t in seq], dtype=torch.long),
                "target_lengths": torch.tensor([len(seq) for seq in targets], dtype=torch.long)}

    def compute_loss(self, out: dict[str, Any], batch: dict[str, Any]
                     ) -> tuple[torch.Tensor, float, dict[str, float]]:
        log_probs = F.log_softmax(out["logits"].float(), dim=-1)                    # (B, T, V)
        loss = F.ctc_loss(log_probs.transpose(0, 1), batch["target"], out["lengths"], batch["target_lengths"],
                          blank=0, reduction="sum", zero_infinity=True)
        ntokens = int(batch["target_lengths"].sum())
        logs: dict[str, float] = {}
        if not torch.is_grad_enabled():  # validation: score the decoded strings
            hyps = [self.text(self._symbols(ids)) for ids in greedy_decode(log_probs, out["lengths"])]
            refs = self._batch_refs(batch)
            for name, (num, den) in self.ratio_metrics(hyps, refs).items():
                logs[f"num_{name}"], logs[f"den_{name}"] = float(num), float(den)
        return loss, ntokens, logs

    def reduce_logs(self, sums: dict[str, float], sample_size: float) -> dict[str, float]:
        out = {k: v / max(sample_size, 1e-12) for k, v in sums.items() if not k.startswith(("num_", "den_"))}
        for k, v in sums.items():
            if k.startswith("num_"):
                name = k[len("num_"):]
                out[name] = metrics.rate(v, sums.get(f"den_{name}", 0.0))
        return out

    def _symbols(self, ids: list[int]) -> list[str]:
        return [self.vocab[i] for i in ids]

    def _batch_refs(self, batch: dict[str, Any]) -> list[str]:
        refs, start = [], 0
        flat = batch["target"].tolist()
        for n in batch["target_lengths"].tolist():
            refs.append(self.text(self._symbols(flat[start:start + n])))
            start += n
        return refs

    def decode(self, out: dict[str, Any], batch: dict[str, Any]) -> list[str]:
        log_probs = F.log_softmax(out["logits"].float(), dim=-1)
        beam = self.cfg.decoder.beam_size
        if beam > 1:
            seqs = [prefix_beam_search(lp[:n], beam) for lp, n in zip(log_probs, out["lengths"].tolist())]
        else:
            seqs = greedy_decode(log_probs, out["lengths"])
        return [self.text(self._symbols(ids)) for ids in seqs]

    def references(self, split: str) -> list[str]:
        return [self.text(self._symbols(t)) for t in self.split(split).targets]

    def score(self, split: str, predictions: list[str]) -> dict[str, float]:
        refs = self.references(split)
        return {name: metrics.rate(num, den) for name, (num, den) in self.ratio_metrics(predictions, refs).items()}

    def format_prediction(self, split: str, index: int, prediction: str) -> str:
        data = self.split(split)
        return f"{data.manifest.ids()[index]}\t{prediction}\t{self.references(split)[index]}"


def word_char_counts(hyps: list[str], refs: list[str]) -> dict[str, tuple[int, int]]:
    """``{"wer": (edits, words), "cer": (edits, characters)}`` of whitespace-separated strings
    (the counts behind :func:`speechssl.downstream.metrics.wer` and ``cer``)."""
    import editdistance

    we = sum(editdistance.eval(h.split(), r.split()) for h, r in zip(hyps, refs))
    wn = sum(len(r.split()) for r in refs)
    ce = sum(editdistance.eval(" ".join(h.split()), " ".join(r.split())) for h, r in zip(hyps, refs))
    cn = sum(len(" ".join(r.split())) for r in refs)
    return {"wer": (we, wn), "cer": (ce, cn)}

