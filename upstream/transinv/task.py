"""Transitive Invariance pretraining as a :class:`speechssl.train.Task`: triplets from a graph of images.

Data: a directory with ``<split>.tsv`` image manifests (e.g. ``scenes/`` of ``speechssl corpus
images``); no labels needed.

The graph (:mod:`.graph`): inter-instance edges join images of one k-means cluster, intra-instance
edges join an image to its augmented views (the image corpus has no video, so augmentation
stands in for the paper's tracking). Clusters are fitted with :func:`speechssl.cluster.fit_kmeans`
(``K = clusters``) on L2-normalised features of the ``fit_split`` images (unaugmented):

* by default the features are the **current model's** (the pooled last stage ``h``), and the
  clusters are fitted again every ``recluster_every`` epochs, at the start of the epoch (the
  first graph comes from the initial weights). The paper clustered the features of a separately
  self-supervised network (Doersch et al.'s context prediction); here no other method's model
  has to be trained first, and the clusters follow the representation as it improves (as
  DeepCluster re-clusters). Re-fitting only at epoch starts keeps every item of an epoch on one
  graph, also in DataLoader workers, which copy the dataset when the epoch's loader starts.
* with ``cluster_upstream=PATH`` they are the features of that **fixed** image upstream (a model
  directory or checkpoint, :func:`speechssl.hub.load`; the mean of its last hidden state's
  patch tokens), clustered once — the paper's arrangement.

The clusters (and the centroids, and the epoch they belong to) are task state, checkpointed, so
a resumed run continues on the very graph it was killed on; k-means draws from its own seed
(``seed``, epoch), the feature pass runs the model in eval mode without gradients, so building
the graph draws nothing from the global RNG. Other splits (validation) are assigned to the
``fit_split`` centroids when the graph is built.

Items: anchor ``a`` = image ``i``; a positive pair of a kind drawn from ``positives``:
``transitive`` ``(a, b')`` — ``b`` another image of ``a``'s cluster (inter edge) and ``b'`` an
augmented view of it (intra edge); ``intra`` ``(a, a')``; ``inter`` ``(a, b)``; and a negative
``n`` drawn from another cluster. Anchors, inter partners and negatives go through a mild
augmentation (random resized crop of area ``anchor_crop_scale``, flip); views (``a'``, ``b'``)
through SimCLR's (crop of area ``view_crop_scale``, flip, colour jitter, greyscale, blur). Every
draw comes from the item's ``(seed, epoch, index)`` generator, in a fixed order: pair kind,
partner, negative, then the three augmentations.

Loss (:func:`speechssl.nn.losses.cosine_triplet_loss`): ``max(0, D(a, p) − D(a, n) + M)`` with
``D = 1 − cos`` of the head's embeddings, averaged over each anchor's negatives — the sampled one
and the ``hard_negatives`` embeddings of the batch (anchors, positives, negatives of other items,
of another cluster than the anchor) closest to it (Wang and Gupta's hard-negative mining) —
summed over anchors (``sample_size`` = anchors). With hard negatives the task is batch-coupled:
under DDP they come from every rank's batch. They are off by default: on the tiny preset, two
hardest negatives from the first update collapsed the embeddings (every cosine distance fell from
about 0.07 to 0.005 in 30 updates, the hinge to the margin — FaceNet's warning about the hardest
negatives early in training), while the sampled negative alone separated them (after 30 updates
``D(a, p)`` 0.22, ``D(a, n)`` 0.86 on the training batches).

Run it with ``speechssl pretrain --method transinv --preset tiny --data DIR/scenes --exp-dir EXP``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from speechssl.cluster import fit_kmeans
from speechssl.cluster.model import KMeansModel
from speechssl.data.augment import normalize, pixel_statistics, randint
from speechssl.data.image import ImageDataset, stack_same
from speechssl.data.image_augment import ViewAugment
from speechssl.data.manifest import Manifest
from speechssl.nn.losses import cosine_triplet_loss
from speechssl.train.task import PretrainContext, Task
from speechssl.upstream.transinv.config import TransInvConfig
from speechssl.upstream.transinv.graph import KIND_ID, PAIR_KINDS, ClusterGraph
from speechssl.upstream.transinv.model import TransInvPretrainModel

__all__ = ["TransInvTaskConfig", "TransInvTask", "TripletImageDataset"]

_log = logging.getLogger(__name__)


@dataclass
class TransInvTaskConfig:
    """Data, graph, augmentations and objective of Transitive Invariance pretraining."""

    data: str = ""  # directory with <split>.tsv image manifests (set by --data)
    margin: float = 0.5  # M of max(0, D(a, p) - D(a, n) + M), D = 1 - cos (Wang and Gupta 2015: 0.5)
    clusters: int = 8  # K of the k-means whose clusters are the inter-instance edges
    fit_split: str = "train"  # the split k-means is fitted on (and whose epochs trigger re-clustering)
    recluster_every: int = 10  # epochs between re-clusterings on the current model's features
    cluster_upstream: str = ""  # a fixed image upstream (model dir / checkpoint) to cluster instead, once
    positives: tuple[str, ...] = ("transitive",)  # kinds of positive pairs drawn per item: transitive, intra, inter
    hard_negatives: int = 0  # in-batch hardest other-cluster negatives per anchor, beside the sampled one (0: none)
    anchor_crop_scale: tuple[float, float] = (0.6, 1.0)  # crop area fractions of anchors, inter partners, negatives
    view_crop_scale: tuple[float, float] = (0.2, 1.0)  # crop area fractions of the augmented views (a', b')
    flip: float = 0.5  # horizontal flip probability (every image)
    jitter_strength: float = 0.5  # colour distortion strength s of the views (SimCLR: 0.5 CIFAR-10)
    jitter_prob: float = 0.8  # probability of colour jitter on a view
    grey_prob: float = 0.2  # probability of greyscale on a view
    blur_prob: float = 0.0  # probability of Gaussian blur on a view
    normalize: Literal["none", "imagenet"] = "none"  # pixel normalisation after augmentation
    feature_batch_size: int = 64  # images per forward of the clustering feature pass
    seed: int = 0  # seed of the augmentations and samples (per epoch and item) and of k-means


class TripletImageDataset(ImageDataset):
    """Triplets ``(anchor, positive, negative)`` of a :class:`ClusterGraph`, seeded by ``(seed, epoch, index)``.

    Items: ``{"id", "index", "anchor", "positive", "negative": (C, S, S) float32, "cluster",
    "partner", "negative_index", "negative_cluster", "kind": int}`` (``kind`` indexes
    :data:`~speechssl.upstream.transinv.graph.PAIR_KINDS`). See the module docstring.

    Args:
        manifest: a ``Manifest`` or ``<split>.tsv`` path.
        graph: returns the split's current graph (called once per item).
        kinds: the positive kinds to draw from.
        anchor_augment: augmentation of anchors, inter partners and negatives.
        view_augment: augmentation of the views (``a'``, ``b'``); same ``size``.
        on_epoch: called with the epoch by :meth:`set_epoch` (the fit split re-clusters there).
        mean, std, channels, seed, check_files: as :class:`~speechssl.data.image.ImageDataset`.
    """

    def __init__(self, manifest: Manifest | str | Path, *, graph: Callable[[], ClusterGraph], kinds: Sequence[str],
                 anchor_augment: ViewAugment, view_augment: ViewAugment,
                 on_epoch: Callable[[int], None] | None = None, **kwargs: Any) -> None:
        for aug in (anchor_augment, view_augment):
            aug.validate()
        if anchor_augment.size != view_augment.size:
            raise ValueError(f"anchor and view augmentations differ in size ({anchor_augment.size} vs "
                             f"{view_augment.size})")
        if not kinds or any(k not in KIND_ID for k in kinds):
            raise ValueError(f"kinds must be a non-empty list of {', '.join(PAIR_KINDS)}, got {list(kinds)}")
        self.graph, self.kinds, self.on_epoch = graph, tuple(kinds), on_epoch
        self.anchor_augment, self.view_augment = anchor_augment, view_augment
        super().__init__(manifest, (), size=view_augment.size, augment=True, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if self.on_epoch is not None:
            self.on_epoch(self.epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        graph = self.graph()
        if graph.num_images != len(self):
            raise RuntimeError(f"the graph has {graph.num_images} images, the dataset {len(self)}")
        g = self.generator(index)
        kind = self.kinds[randint(g, 0, len(self.kinds))]
        partner, kind = graph.sample_partner(index, kind, g)  # type: ignore[arg-type]
        negative = graph.sample_negative(index, g)
        image = self.load(index)
        anchor, _ = self.anchor_augment(image, g)
        partner_image = image if partner == index else self.load(partner)
        positive, _ = (self.anchor_augment if kind == "inter" else self.view_augment)(partner_image, g)
        neg, _ = self.anchor_augment(self.load(negative), g)
        item = self.item_base(index)
        item.update(anchor=normalize(anchor, self.mean, self.std), positive=normalize(positive, self.mean, self.std),
                    negative=normalize(neg, self.mean, self.std), cluster=int(graph.clusters[index]),
                    partner=int(partner), negative_index=int(negative),
                    negative_cluster=int(graph.clusters[negative]), kind=KIND_ID[kind])
        return item


class TransInvTask(Task):
    """Transitive Invariance pretraining: :class:`TransInvPretrainModel`, graph triplets, the ranking loss.

    Args:
        cfg: data, graph, augmentations and objective.
        ctx: the pretraining context; ``ctx.model`` is a :class:`TransInvConfig`.
    """

    method = "transinv"

    def __init__(self, cfg: TransInvTaskConfig, ctx: PretrainContext) -> None:
        if not isinstance(ctx.model, TransInvConfig):
            raise TypeError(f"{type(self).__name__} needs a TransInvConfig in ctx.model, got {type(ctx.model).__name__}")
        if not cfg.data:
            raise ValueError("task.data is empty: pass --data DIR (the directory with <split>.tsv image manifests)")
        if not cfg.margin >= 0:
            raise ValueError(f"task.margin must be >= 0, got {cfg.margin}")
        if cfg.clusters < 2:
            raise ValueError(f"task.clusters must be >= 2 (negatives come from other clusters), got {cfg.clusters}")
        if cfg.recluster_every < 1:
            raise ValueError(f"task.recluster_every must be >= 1 epoch, got {cfg.recluster_every}")
        if not cfg.positives or any(k not in KIND_ID for k in cfg.positives):
            raise ValueError(f"task.positives must list some of {', '.join(PAIR_KINDS)}, got {list(cfg.positives)}")
        if cfg.hard_negatives < 0:
            raise ValueError(f"task.hard_negatives must be >= 0, got {cfg.hard_negatives}")
        if cfg.feature_batch_size < 1:
            raise ValueError(f"task.feature_batch_size must be >= 1, got {cfg.feature_batch_size}")
        pixel_statistics(cfg.normalize, ctx.model.channels)  # checked before any work
        ctx.model.validate()
        self.cfg, self.model_cfg = cfg, ctx.model
        self.batch_coupled = cfg.hard_negatives > 0
        size = ctx.model.image_size
        self.anchor_augment = ViewAugment(size=size, scale=tuple(cfg.anchor_crop_scale), flip=cfg.flip,
                                          jitter_strength=0.0, jitter_prob=0.0, grey_prob=0.0, blur_prob=0.0)
        self.view_augment = ViewAugment(size=size, scale=tuple(cfg.view_crop_scale), flip=cfg.flip,
                                        jitter_strength=cfg.jitter_strength, jitter_prob=cfg.jitter_prob,
                                        grey_prob=cfg.grey_prob, blur_prob=cfg.blur_prob)
        for name, aug in (("anchor", self.anchor_augment), ("view", self.view_augment)):
            try:
                aug.validate()
            except ValueError as exc:
                raise ValueError(f"task ({name} augmentation): {exc}") from None
        self._model: TransInvPretrainModel | None = None
        self._extractor: nn.Module | None = None
        self._datasets: dict[str, TripletImageDataset] = {}
        self._graph_epoch = 0  # the epoch the clusters were fitted at (0: none yet)
        self._epoch = 1  # the fit split's current epoch
        self._centroids: torch.Tensor | None = None
        self._clusters: dict[str, torch.Tensor] = {}
        self._graphs: dict[str, ClusterGraph] = {}

    @classmethod
    def trainer_preset(cls, preset: str) -> Any:
        """tiny: Adam 1e-3, 32 triplets a batch, 300 updates (validated and saved every 100); small: Adam 1e-3,
        256 triplets, 20k updates. (The paper trained VGG16 with SGD; Adam trains these small ResNets as well.)"""
        from speechssl.train.presets import image_cosine, image_tiny

        if preset == "tiny":  # the tiny corpus: 3 batches an epoch, so nothing per epoch
            return image_tiny(batch=32, lr=1e-3, weight_decay=1e-4, warmup_updates=10, save_every_epochs=0,
                              validate_every_epochs=0)
        return image_cosine(max_updates=20_000, batch=256, lr=1e-3, weight_decay=1e-6, warmup_updates=500, every=2000)

    def build_model(self) -> TransInvPretrainModel:
        self._model = TransInvPretrainModel(self.model_cfg)
        return self._model

    # --- the graph ------------------------------------------------------------------------------

    def _manifest(self, split: str) -> Path:
        manifest = Path(self.cfg.data) / f"{split}.tsv"
        if not manifest.is_file():
            raise FileNotFoundError(f"manifest not found: {manifest} (split {split!r} of task.data)")
        return manifest

    def refit_epoch(self, epoch: int) -> int:
        """The epoch whose start fitted the clusters that ``epoch`` trains on."""
        if self.cfg.cluster_upstream:
            return 1
        r = self.cfg.recluster_every
        return 1 + ((max(int(epoch), 1) - 1) // r) * r

    def _feature_model(self) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module, tuple[int, int, int]]:
        """``(images → (B, D) features, the module, its input (C, H, W))`` of the clustering features."""
        if self.cfg.cluster_upstream:
            if self._extractor is None:
                from speechssl import hub

                device = next(self._model.parameters()).device if self._model is not None else "cpu"
                self._extractor = hub.load(self.cfg.cluster_upstream, device=device)
            ex = self._extractor
            shape = getattr(ex, "input_shape", None)
            if shape is None or len(shape) != 3 or shape[1] != shape[2]:
                raise ValueError(f"task.cluster_upstream={self.cfg.cluster_upstream}: not an image upstream with a "
                                 f"square input_shape (C, S, S) (got {shape!r})")
            prefix = int(getattr(ex, "prefix_tokens", 0))

            def pooled(x: torch.Tensor) -> torch.Tensor:
                h = ex(x)["last_hidden_state"]  # (B, T, D)
                return (h[:, prefix:] if h.shape[1] > prefix else h).mean(1)
            return pooled, ex, tuple(int(v) for v in shape)  # type: ignore[return-value]
        if self._model is None:
            raise RuntimeError("TransInvTask: build_model() before reading the data: the graph's clusters come "
                               "from the model's features")
        up = self._model.upstream
        return up.represent, up, tuple(up.input_shape)  # type: ignore[return-value]

    def features(self, split: str) -> torch.Tensor:
        """L2-normalised clustering features ``(N, D)`` of ``split``'s unaugmented images (no grad, eval)."""
        fn, module, (c, s, _) = self._feature_model()
        ds = ImageDataset(self._manifest(split), size=s, augment=False, crop_fraction=1.0, channels=c,
                          check_files=False)
        device = next(module.parameters()).device
        was_training = module.training
        module.eval()
        out = []
        try:
            with torch.no_grad():
                bs = self.cfg.feature_batch_size
                for start in range(0, len(ds), bs):
                    x = torch.stack([ds[i]["image"] for i in range(start, min(start + bs, len(ds)))])
                    out.append(fn(x.to(device)).float().cpu())
        finally:
            module.train(was_training)
        return F.normalize(torch.cat(out), dim=1)

    def _refit(self, epoch: int) -> None:
        feats = self.features(self.cfg.fit_split)
        if len(feats) < self.cfg.clusters:
            raise ValueError(f"task.clusters={self.cfg.clusters} exceeds the {len(feats)} images of "
                             f"{self.cfg.fit_split}.tsv; use fewer clusters")
        source = self.cfg.cluster_upstream or "the current model"
        km = fit_kmeans(feats, self.cfg.clusters, seed=self.cfg.seed * 100_003 + epoch,
                        feature=f"transinv graph features ({source}, epoch {epoch})")
        self._centroids = km.centroids.float().cpu()
        clusters = {self.cfg.fit_split: km.predict(feats).cpu()}
        for split in self._datasets:
            if split != self.cfg.fit_split:
                clusters[split] = km.predict(self.features(split)).cpu()
        self._clusters, self._graphs, self._graph_epoch = clusters, {}, int(epoch)
        sizes = torch.bincount(clusters[self.cfg.fit_split], minlength=self.cfg.clusters)
        _log.info("transinv graph at epoch %d (features of %s): %d images in %d non-empty clusters (sizes %d-%d)",
                  epoch, source, len(feats), int((sizes > 0).sum()), int(sizes[sizes > 0].min()), int(sizes.max()))

    def _on_fit_epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)
        target = self.refit_epoch(epoch)
        if target != self._graph_epoch:
            self._refit(target)

    def graph(self, split: str) -> ClusterGraph:
        """The current :class:`ClusterGraph` of ``split`` (built on first use)."""
        if not self._clusters:
            self._refit(self.refit_epoch(self._epoch))
        if split not in self._clusters:
            # a split first read after the graph was built: its images go to the stored centroids
            self._clusters[split] = KMeansModel(centroids=self._centroids).predict(self.features(split)).cpu()
        if split not in self._graphs:
            self._graphs[split] = ClusterGraph(self._clusters[split])
        return self._graphs[split]

    # --- data -----------------------------------------------------------------------------------

    def dataset(self, split: str) -> TripletImageDataset:
        mean, std = pixel_statistics(self.cfg.normalize, self.model_cfg.channels)
        ds = TripletImageDataset(self._manifest(split), graph=lambda: self.graph(split), kinds=self.cfg.positives,
                                 anchor_augment=self.anchor_augment, view_augment=self.view_augment,
                                 on_epoch=self._on_fit_epoch if split == self.cfg.fit_split else None,
                                 mean=mean, std=std, channels=self.model_cfg.channels, seed=self.cfg.seed)
        self._datasets[split] = ds
        return ds

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """``{"id": list, "index", "cluster", "partner", "negative_index", "negative_cluster", "kind": (B,) int64,
        "anchor", "positive", "negative": (B, C, S, S)}``."""
        batch: dict[str, Any] = {"id": [it["id"] for it in items]}
        for key in ("index", "cluster", "partner", "negative_index", "negative_cluster", "kind"):
            batch[key] = torch.tensor([it[key] for it in items], dtype=torch.long)
        for key in ("anchor", "positive", "negative"):
            batch[key] = stack_same([it[key] for it in items], key)
        return batch

    # --- loss -----------------------------------------------------------------------------------

    def _mined(self, za: torch.Tensor, keys: torch.Tensor, key_clusters: torch.Tensor, clusters: torch.Tensor,
               offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``hard_negatives`` keys most cosine-similar to each anchor among those of another cluster,
        the anchor's own three embeddings excluded: ``(B, k, P)`` and their ``(B, k)`` validity."""
        B, M = za.shape[0], keys.shape[0]
        k = min(self.cfg.hard_negatives, M)
        with torch.no_grad():
            sims = F.normalize(za.float(), dim=1) @ F.normalize(keys.float(), dim=1).T  # (B, M)
            ok = key_clusters[None, :] != clusters[:, None]
            rows = torch.arange(B, device=za.device)
            for g in range(3):  # the anchor's own anchor, positive and negative rows of [za; zp; zn]
                ok[rows, offset + g * B + rows] = False
            sims = sims.masked_fill(~ok, float("-inf"))
            top = sims.topk(k, dim=1)
        return keys[top.indices], torch.isfinite(top.values)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, float]]:
        z = model([batch["anchor"], batch["positive"], batch["negative"]])  # (3, B, P)
        za, zp, zn = z.unbind(0)
        negatives, valid = zn[:, None], torch.ones(zn.shape[0], 1, dtype=torch.bool, device=zn.device)
        if self.cfg.hard_negatives > 0:
            c = batch["cluster"]
            keys, offset = self.gather(torch.cat([za, zp, zn]))  # (M, P)
            key_c, _ = self.gather(torch.cat([c, c, batch["negative_cluster"]]).float()[:, None])
            mined, ok = self._mined(za, keys, key_c[:, 0].round().long(), c, offset)
            negatives, valid = torch.cat([negatives, mined], 1), torch.cat([valid, ok], 1)
        res = cosine_triplet_loss(za, zp, negatives, self.cfg.margin, negative_mask=valid)
        kinds = batch["kind"]
        logs = {"triplet": float(res.loss.detach()), "violations": float(res.violations),
                "d_pos": float(res.d_pos), "d_neg": float(res.d_neg),
                "transitive": float((kinds == KIND_ID["transitive"]).sum())}
        return res.loss, float(res.count), logs

    # --- state and upstream ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The graph: the epoch its clusters were fitted at, the centroids and every split's clusters."""
        if not self._clusters:
            return {}
        return {"graph_epoch": self._graph_epoch, "centroids": self._centroids,
                "clusters": {k: v.clone() for k, v in self._clusters.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self._graph_epoch = int(state["graph_epoch"])
        self._centroids = state["centroids"].float()
        self._clusters = {k: v.long() for k, v in state["clusters"].items()}
        self._graphs = {}

    def upstream(self, model: nn.Module) -> nn.Module:
        return model.upstream

    def upstream_config(self) -> TransInvConfig:
        return self.model_cfg
