"""UMD (Hansen-Estruch et al., 2024, "Unified Auto-Encoding with Masked Diffusion"): one ViT
auto-encoder trained on MAE-style masking and diffusion noising at once.

* :mod:`.config` — :class:`UMDConfig` and the ``tiny``/``small`` presets.
* :mod:`.model` — :class:`UMDModel` (the time-conditioned ViT upstream, probed at the clean step)
  and :class:`UMDPretrainModel` (clean high-mask rows + noised low-mask rows, ``x̂_0`` and ``ε̂`` heads).
* :mod:`.task` — :class:`UMDTask`, :class:`UMDTaskConfig` (image manifests, seeded corruptions) and
  :func:`umd_loss`.

The noise schedule, ``q_sample`` and the timestep embedding live in :mod:`speechssl.nn.diffusion`.
Registered as the ``umd`` method through the ``speechssl.upstream`` entry point (``METHOD``).
"""
from speechssl.registry import Method
from speechssl.upstream.umd.config import PRESETS, UMDConfig
from speechssl.upstream.umd.example import write_example
from speechssl.upstream.umd.model import UMDModel, UMDOutput, UMDPretrainModel
from speechssl.upstream.umd.task import UMDTask, UMDTaskConfig, umd_loss

__all__ = ["UMDConfig", "UMDModel", "UMDOutput", "UMDPretrainModel", "UMDTask", "UMDTaskConfig", "PRESETS",
           "METHOD", "umd_loss"]

METHOD = Method(
    name="umd",
    config_cls=UMDConfig,
    model_cls=UMDModel,
    presets=PRESETS,
    task_cls=UMDTask,
    task_config_cls=UMDTaskConfig,
    description="UMD: unified masked diffusion on ViT patches (clean rows: 75% masked, x0 loss; noised rows: "
                "37.5% masked, eps loss on visible + x0 loss on masked patches)",
    modality="image",
    input_kind="image",
    example=write_example,
)
