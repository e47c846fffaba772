"""LightHuBERT (Wang et al., Interspeech 2022): a once-for-all supernet distilled from HuBERT.

* :mod:`.config` — :class:`LightHubertConfig`, the ``tiny``/``small``/``base`` search spaces, subnet specs.
* :mod:`.model` — :class:`LightHubertModel`, the supernet as an upstream (one subnet at a time).
* :mod:`.task` — :class:`LightHubertTask`: stage 1 (full student) / stage 2 (supernet) distillation.
* :mod:`.convert` — the official checkpoint reader (format ``lighthubert``).

Registered as the ``lighthubert`` method through the ``speechssl.upstream`` entry point (``METHOD``).
"""
from speechssl.registry import Method
from speechssl.upstream.lighthubert.config import PRESETS, LightHubertConfig, parse_subnet
from speechssl.upstream.lighthubert.convert import LightHubertConverter
from speechssl.upstream.lighthubert.example import write_example
from speechssl.upstream.lighthubert.model import LightHubertModel
from speechssl.upstream.lighthubert.task import LightHubertTask, LightHubertTaskConfig

__all__ = ["LightHubertConfig", "LightHubertModel", "LightHubertTask", "LightHubertTaskConfig", "PRESETS",
           "parse_subnet", "METHOD"]

METHOD = Method(
    name="lighthubert",
    config_cls=LightHubertConfig,
    model_cls=LightHubertModel,
    presets=PRESETS,
    task_cls=LightHubertTask,
    task_config_cls=LightHubertTaskConfig,
    example=write_example,
    description="LightHuBERT: a weight-sharing transformer supernet distilled from a HuBERT teacher",
    converters={"lighthubert": LightHubertConverter()},
)
