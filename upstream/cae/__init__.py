"""CAE (Chen et al., 2022, "Context Autoencoder for Self-Supervised Representation Learning").

A ViT encoder on the visible patches, a latent contextual regressor (cross-attention from
masked queries) predicting the masked patches' representations, aligned (MSE, weight 2) to
the encoder's own representations of the masked patches (stop-gradient), and a decoder over
the predicted representations that reconstructs the masked patches. The paper's decoder
predicts DALL-E tokenizer tokens; that tokenizer cannot be downloaded here, so normalised
pixel patches are the targets instead (see :mod:`.model`).

* :mod:`.config` — :class:`CAEConfig` and the ``tiny``/``small`` presets.
* :mod:`.model` — :class:`CAEModel` (the ViT upstream), :class:`CAEPretrainModel`, :func:`cae_losses`.
* :mod:`.masking` — block-wise (BEiT/CAE) and random masks with an exact count.
* :mod:`.task` — :class:`CAETask` and :class:`CAETaskConfig` (image manifests, seeded masks).

Registered as the ``cae`` method through the ``speechssl.upstream`` entry point (``METHOD``).
"""
from speechssl.registry import Method
from speechssl.upstream.cae.config import PRESETS, CAEConfig
from speechssl.upstream.cae.example import write_example
from speechssl.upstream.cae.model import CAEModel, CAEPretrainModel, cae_losses
from speechssl.upstream.cae.task import CAETask, CAETaskConfig

__all__ = ["CAEConfig", "CAEModel", "CAEPretrainModel", "CAETask", "CAETaskConfig", "PRESETS", "METHOD",
           "cae_losses"]

METHOD = Method(
    name="cae",
    config_cls=CAEConfig,
    model_cls=CAEModel,
    presets=PRESETS,
    task_cls=CAETask,
    task_config_cls=CAETaskConfig,
    description="CAE: context autoencoder on ViT patches (latent regression aligned to the encoder, weight 2, "
                "+ pixel reconstruction of 50% block-masked patches; pixels stand in for DALL-E tokens)",
    modality="image",
    input_kind="image",
    example=write_example,
)
