"""MixedAE (Chen et al., CVPR 2023, "Mixed Autoencoder for Self-supervised Visual Representation
Learning"): MAE with patch-wise image mixing and homologous recognition.

* :mod:`.config` — :class:`MixedAEConfig` and the ``tiny``/``small`` presets.
* :mod:`.model` — :class:`MixedAEModel` (the ViT upstream), :class:`MixedAEPretrainModel` (mixing,
  homologous attention, unmixing + pixel reconstruction, homologous contrastive loss) and
  :func:`homologous_contrastive`; the module docstring says what follows the paper and what was chosen.
* :mod:`.task` — :class:`MixedAETask` and :class:`MixedAETaskConfig` (image manifests, seeded mixing).

Mixing, unmixing and the masked attention live in :mod:`speechssl.nn.masked_image`.
Registered as the ``mixedae`` method through the ``speechssl.upstream`` entry point (``METHOD``).
"""
from speechssl.registry import Method
from speechssl.upstream.mixedae.config import PRESETS, MixedAEConfig
from speechssl.upstream.mixedae.example import write_example
from speechssl.upstream.mixedae.model import (
    MixedAEModel, MixedAEPretrainModel, homologous_contrastive, image_contrastive, source_halves,
)
from speechssl.upstream.mixedae.task import MixedAETask, MixedAETaskConfig

__all__ = ["MixedAEConfig", "MixedAEModel", "MixedAEPretrainModel", "MixedAETask", "MixedAETaskConfig", "PRESETS",
           "METHOD", "homologous_contrastive", "image_contrastive", "source_halves"]

METHOD = Method(
    name="mixedae",
    config_cls=MixedAEConfig,
    model_cls=MixedAEModel,
    presets=PRESETS,
    task_cls=MixedAETask,
    task_config_cls=MixedAETaskConfig,
    description="MixedAE: MAE with 4 images mixed patch-wise, attention restricted to each image's own patches, "
                "pixel reconstruction of the patches each image did not give + homologous contrastive loss",
    modality="image",
    input_kind="image",
    example=write_example,
)
