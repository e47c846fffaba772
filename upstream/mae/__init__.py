"""MAE (He et al., 2022, "Masked Autoencoders Are Scalable Vision Learners"): the reference
masked-image model of the image adapters.

* :mod:`.config` — :class:`MAEConfig` and the ``tiny``/``base`` presets.
* :mod:`.model` — :class:`MAEModel` (the ViT upstream) and :class:`MAEPretrainModel`.
* :mod:`.task` — :class:`MAETask` and :class:`MAETaskConfig` (image manifests, seeded masks).
* :mod:`.hf` — the key table to and from ``transformers.ViTMAEForPreTraining``.

Registered as the ``mae`` method through the ``speechssl.upstream`` entry point (``METHOD``).
"""
from speechssl.registry import Method
from speechssl.upstream.mae.config import PRESETS, MAEConfig
from speechssl.upstream.mae.example import write_example
from speechssl.upstream.mae.model import MAEModel, MAEPretrainModel
from speechssl.upstream.mae.task import MAETask, MAETaskConfig

__all__ = ["MAEConfig", "MAEModel", "MAEPretrainModel", "MAETask", "MAETaskConfig", "PRESETS", "METHOD"]

METHOD = Method(
    name="mae",
    config_cls=MAEConfig,
    model_cls=MAEModel,
    presets=PRESETS,
    task_cls=MAETask,
    task_config_cls=MAETaskConfig,
    description="MAE: masked autoencoder on ViT patches (pixel reconstruction of 75% removed patches)",
    modality="image",
    input_kind="image",
    example=write_example,
)
