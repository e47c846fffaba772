"""SSAMBA (Shams et al., 2024): self-supervised audio Mamba, SSAST's masked patch modelling on
bidirectional Mamba blocks.

* :mod:`.config` — :class:`SsambaConfig` and the ``nano``/``tiny``/``small``/``base`` presets.
* :mod:`.model` — :class:`SsambaModel` (the upstream) and :class:`SsambaPretrainModel`.
* :mod:`.task` — :class:`SsambaPretrainTask` and :class:`SsambaTaskConfig`.

Registered as the ``ssamba`` method through the ``speechssl.upstream`` entry point (``METHOD``).
"""
from speechssl.registry import Method
from speechssl.upstream.ssamba.config import PRESETS, SsambaConfig
from speechssl.upstream.ssamba.example import write_example
from speechssl.upstream.ssamba.model import SsambaModel, SsambaPretrainModel
from speechssl.upstream.ssamba.task import SsambaPretrainTask, SsambaTaskConfig

__all__ = ["SsambaConfig", "SsambaModel", "SsambaPretrainModel", "SsambaPretrainTask", "SsambaTaskConfig",
           "PRESETS", "METHOD"]

METHOD = Method(
    name="ssamba",
    config_cls=SsambaConfig,
    model_cls=SsambaModel,
    presets=PRESETS,
    task_cls=SsambaPretrainTask,
    example=write_example,
    smallest="nano",
    task_config_cls=SsambaTaskConfig,
    description="SSAMBA: masked fbank-patch modelling (InfoNCE + MSE) on bidirectional Mamba blocks",
)
