"""image_probe — linear and k-NN probes of a frozen image upstream on one label of an image corpus.

Embedded corpus (``speechssl corpus images``): ``<data>/scenes/{train,valid,test}.tsv`` with a
factor label beside them (``task.factor``: ``shape``, ``colour``, ``texture``, ``size``,
``position``, ``background``, ``count``) and ``dict.<factor>.txt``; or ``task.subset=digits
task.factor=digit`` for scikit-learn's digits. Images are resized to the upstream's input size.
Features: one hidden state (``task.layer``, default the last), pooled per image (patch mean or
class token). Metric: linear-probe accuracy (``accuracy``, higher is better); ``knn_accuracy``
and the majority-class ``chance`` are reported beside it. Nothing is trained by the Trainer.
"""
from speechssl.downstream.image_probe.task import ImageProbe, ImageProbeConfig
from speechssl.registry import DownstreamTask

__all__ = ["TASK", "ImageProbeConfig", "ImageProbe"]

TASK = DownstreamTask(
    name="image_probe", task_cls=ImageProbe, config_cls=ImageProbeConfig, metric="accuracy", higher_is_better=True,
    description="image probe: linear (and k-NN) classification of one image factor from frozen pooled features",
    modality="image")
