"""SimCLR (Chen et al., 2020): the contrastive reference of the image adapters, with G-SimCLR's pseudo-label negatives.

* :mod:`.config` — :class:`SimCLRConfig` (ResNet or ViT backbone, projection head) and the
  ``tiny``/``small``/``tiny_vit`` presets.
* :mod:`.model` — :class:`SimCLRModel` (the upstream) and :class:`SimCLRPretrainModel` (+ projector).
* :mod:`.task` — :class:`SimCLRTask` and :class:`SimCLRTaskConfig` (two seeded views, NT-Xent;
  ``negatives=pseudo_label``: G-SimCLR).
* :mod:`.pseudo_labels` — k-means pseudo-labels from a frozen image upstream (G-SimCLR).

Registered as the ``simclr`` method through the ``speechssl.upstream`` entry point (``METHOD``).
"""
from speechssl.registry import Method
from speechssl.upstream.simclr.config import PRESETS, SimCLRConfig
from speechssl.upstream.simclr.example import write_example
from speechssl.upstream.simclr.model import SimCLRModel, SimCLRPretrainModel
from speechssl.upstream.simclr.task import SimCLRTask, SimCLRTaskConfig

__all__ = ["SimCLRConfig", "SimCLRModel", "SimCLRPretrainModel", "SimCLRTask", "SimCLRTaskConfig", "PRESETS",
           "METHOD"]

METHOD = Method(
    name="simclr",
    config_cls=SimCLRConfig,
    model_cls=SimCLRModel,
    presets=PRESETS,
    task_cls=SimCLRTask,
    task_config_cls=SimCLRTaskConfig,
    description="SimCLR: NT-Xent between two augmented views (ResNet or ViT; G-SimCLR pseudo-label negatives)",
    modality="image",
    input_kind="image",
    example=write_example,
)
