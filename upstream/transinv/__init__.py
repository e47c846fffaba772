"""Transitive Invariance (Wang, He and Gupta, ICCV 2017): a ranking loss over pairs that a graph's transitivity gives.

* :mod:`.config` — :class:`TransInvConfig` (ResNet backbone, embedding head) and the ``tiny``/``small`` presets.
* :mod:`.graph` — inter-/intra-instance edges, :func:`~.graph.transitive_pairs` and the image corpus's
  :class:`~.graph.ClusterGraph` (k-means clusters as inter-instance edges, augmented views standing in
  for video tracking as intra-instance edges).
* :mod:`.model` — :class:`TransInvModel` (the upstream) and :class:`TransInvPretrainModel` (+ embedding head).
* :mod:`.task` — :class:`TransInvTask` and :class:`TransInvTaskConfig` (triplets ``(a, b', n)`` from the
  graph, re-clustered on the current model every few epochs or clustered once on a fixed upstream;
  ``max(0, D(a, p) − D(a, n) + M)`` on cosine distance with sampled and in-batch hard negatives).

Registered as the ``transinv`` method through the ``speechssl.upstream`` entry point (``METHOD``).
"""
from speechssl.registry import Method
from speechssl.upstream.transinv.config import PRESETS, TransInvConfig
from speechssl.upstream.transinv.example import write_example
from speechssl.upstream.transinv.model import TransInvModel, TransInvPretrainModel
from speechssl.upstream.transinv.task import TransInvTask, TransInvTaskConfig

__all__ = ["TransInvConfig", "TransInvModel", "TransInvPretrainModel", "TransInvTask", "TransInvTaskConfig",
           "PRESETS", "METHOD"]

METHOD = Method(
    name="transinv",
    config_cls=TransInvConfig,
    model_cls=TransInvModel,
    presets=PRESETS,
    task_cls=TransInvTask,
    task_config_cls=TransInvTaskConfig,
    description="Transitive Invariance: triplet ranking loss on transitive pairs of a cluster/augmentation graph (ResNet)",
    modality="image",
    input_kind="image",
    example=write_example,
)
