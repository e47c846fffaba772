"""asv — automatic speaker verification: do two utterances come from the same speaker?

An x-vector head (TDNN layers, mean + standard-deviation pooling, embedding layer) is
trained with AM-softmax to classify the training speakers of ``<data>/read/`` (the best
checkpoint has the lowest AM-softmax loss on ``read/valid``; their accuracy is logged too). Test: embeddings of the held-out speakers'
utterances in ``<data>/verification/test.tsv``, cosine similarity for every pair in
``verification/trials.txt`` (``<1|0> <uid1> <uid2>``), equal error rate, EER (lower is
better). The trial speakers are never seen in training.

Real data (VoxCeleb1, SUPERB's setting): ``read/`` ← the VoxCeleb1 dev speakers with a
``.spk`` file, ``verification/test.tsv`` ← the test speakers' files, and ``trials.txt`` ←
``veri_test.txt`` with the ``.wav`` extension removed from both ids.
"""
from speechssl.downstream.asv.task import ASVConfig, SpeakerVerification
from speechssl.registry import DownstreamTask

__all__ = ["TASK", "ASVConfig", "SpeakerVerification"]

TASK = DownstreamTask(
    name="asv", task_cls=SpeakerVerification, config_cls=ASVConfig, metric="eer", higher_is_better=False,
    description="speaker verification: same or different speaker, for speakers never seen in training; "
                "equal error rate")
