"""asr — speech recognition: the words of an utterance, by character CTC.

Embedded corpus: ``<data>/read/{train,valid,test}.tsv`` with ``<split>.ltr`` (fairseq letter
transcripts: ``H I | Y O U |``) and ``dict.ltr.txt``. Metric: word error rate, WER (lower is
better); CER is reported too. Head: a BiLSTM, one layer of 128 units per direction by default
(SUPERB uses 2 x 1024: ``-o task.head.num_layers=2,task.head.hidden_dim=1024``), greedy CTC
decoding, or an LM-free prefix beam search with ``-o task.decoder.beam_size=8``.

Real data (LibriSpeech): ``speechssl corpus import-librispeech`` writes the same ``.tsv``/``.ltr``/``.wrd``
files from ``*.trans.txt``; put them in a ``read/`` folder (or set ``-o task.subset=NAME``).
"""
from speechssl.downstream.asr.task import ASRConfig, SpeechRecognition
from speechssl.registry import DownstreamTask

__all__ = ["TASK", "ASRConfig", "SpeechRecognition"]

TASK = DownstreamTask(
    name="asr", task_cls=SpeechRecognition, config_cls=ASRConfig, metric="wer", higher_is_better=False,
    description="speech recognition: transcribe speech into words (character CTC, no LM); word error rate")
