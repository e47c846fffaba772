"""HuBERT (Hsu et al., 2021): masked prediction of k-means pseudo-labels.

* :mod:`.config` — :class:`HubertConfig` and the ``tiny``/``base``/``large`` presets.
* :mod:`.model` — :class:`HubertModel` (the upstream) and :class:`HubertPretrainModel`.
* :mod:`.task` — :class:`HubertPretrainTask` and :class:`HubertTaskConfig`.

Registered as the ``hubert`` method through the ``speechssl.upstream`` entry point (``METHOD``).
"""
from speechssl.convert.fairseq import FairseqConverter
from speechssl.convert.trunk_hf import TrunkHFConverter
from speechssl.registry import Method
from speechssl.upstream.hubert.config import PRESETS, HubertConfig
from speechssl.upstream.hubert.example import write_example
from speechssl.upstream.hubert.model import HubertModel, HubertPretrainModel
from speechssl.upstream.hubert.task import HubertPretrainTask, HubertTaskConfig

__all__ = ["HubertConfig", "HubertModel", "HubertPretrainModel", "HubertPretrainTask", "HubertTaskConfig",
           "PRESETS", "METHOD"]

METHOD = Method(
    name="hubert",
    config_cls=HubertConfig,
    model_cls=HubertModel,
    presets=PRESETS,
    task_cls=HubertPretrainTask,
    example=write_example,
    task_config_cls=HubertTaskConfig,
    description="HuBERT: masked prediction of k-means units (conv encoder + transformer)",
    converters={"hf": TrunkHFConverter(HubertConfig, ["hubert"]),
                "fairseq": FairseqConverter(HubertConfig, {"hubert": False, "hubert_ctc": True})},
)
