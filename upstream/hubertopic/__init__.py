"""HuBERTopic (Maekaku et al., ICASSP 2024): HuBERT plus utterance topic classification.

* :mod:`.config` — :class:`HubertopicConfig` (HuBERT's fields + ``num_topics``, ``topic_weight``,
  ``topic_pooling``, ``topic_layer``) and the ``tiny``/``base`` presets.
* :mod:`.model` — :class:`HubertopicModel` (the upstream, the shared trunk) and
  :class:`HubertopicPretrainModel` (unit head + topic head).
* :mod:`.task` — :class:`HubertopicPretrainTask` and :class:`HubertopicTaskConfig`.

Topic labels come from ``speechssl cluster lda`` (gensim LDA over bag-of-units documents); the
recipe is ``recipes/hubertopic/run.sh``. Registered as the ``hubertopic`` method through the
``speechssl.upstream`` entry point (``METHOD``).
"""
from speechssl.registry import Method
from speechssl.upstream.hubertopic.config import PRESETS, HubertopicConfig
from speechssl.upstream.hubertopic.example import write_example
from speechssl.upstream.hubertopic.model import HubertopicModel, HubertopicPretrainModel
from speechssl.upstream.hubertopic.task import HubertopicPretrainTask, HubertopicTaskConfig

__all__ = ["HubertopicConfig", "HubertopicModel", "HubertopicPretrainModel", "HubertopicPretrainTask",
           "HubertopicTaskConfig", "PRESETS", "METHOD"]

METHOD = Method(
    name="hubertopic",
    config_cls=HubertopicConfig,
    model_cls=HubertopicModel,
    presets=PRESETS,
    task_cls=HubertopicPretrainTask,
    task_config_cls=HubertopicTaskConfig,
    example=write_example,
    description="HuBERTopic: HuBERT masked unit prediction + utterance topic (LDA over units) classification",
)
