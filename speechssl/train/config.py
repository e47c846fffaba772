"""Configuration of the shared Trainer: optimizer, learning-rate schedule, loop and checkpoints.

All fields can be set from YAML (``trainer:`` section) or dotted overrides such as
``trainer.optim.lr=2e-4 trainer.schedule.name=tri_stage trainer.max_updates=400``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

__all__ = ["OptimConfig", "ScheduleConfig", "TrainerConfig"]


@dataclass
class OptimConfig:
    """Adam/AdamW settings and the parameter groups (see ``optim.param_groups``).

    Parameter groups: every trainable parameter of the Task's model is in exactly one group,
    keyed by its weight decay and its learning-rate factor ``lr_scale`` (the schedule sets each
    group's lr to ``schedule_lr * lr_scale`` before every update). With the defaults there is one
    group: every parameter decays by ``weight_decay`` at the full lr (fairseq's behaviour, which
    the HuBERT/wav2vec2/SSAMBA recipes and the quickstart figures rest on).

    ``decay_norm_bias=false`` takes parameters with ``ndim <= 1`` (norm scales and shifts,
    biases, mask embeddings, scalar temperatures) and those :meth:`Task.no_weight_decay` names
    out of weight decay (timm/BEiT/MAE practice).

    ``layer_decay=d`` (BEiT/data2vec layer-wise lr decay) needs the Task's ``num_layers`` = L and
    ``layer_id(name)``: a parameter of layer ``i`` (0 = embeddings/front-end, 1..L = blocks,
    L + 1 = what follows the last block) gets ``lr_scale = d ** (L + 1 - i)``; parameters with no
    layer (``layer_id`` None) get 1.
    """

    name: Literal["adam", "adamw"] = "adamw"  # adamw: decoupled weight decay; adam: L2 added to the gradient
    lr: float = 5e-4  # peak learning rate
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 0.01
    decay_norm_bias: bool = True  # False: no weight decay on ndim <= 1 parameters nor on Task.no_weight_decay names
    layer_decay: Optional[float] = None  # layer-wise lr decay factor in (0, 1] (needs Task.num_layers/layer_id)
    clip_norm: float = 10.0  # clip the global gradient norm to this (0: no clipping)


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, a function of the number of updates done (see ``schedule.py``).

    ``constant``: ``lr`` after an optional linear warmup. ``linear``: warmup, then linear decay
    to ``final_lr_scale * lr`` at ``total_updates`` (fairseq ``polynomial_decay``, power 1).
    ``cosine``: warmup, then half a cosine down to ``final_lr_scale * lr``. ``tri_stage``:
    fairseq's warmup / hold / exponential decay, by ``phase_ratio`` of ``total_updates`` or by
    explicit ``warmup_updates``/``hold_updates``/``decay_updates``.
    """

    name: Literal["constant", "linear", "cosine", "tri_stage"] = "linear"
    warmup_updates: int = 0  # updates of linear warmup from init_lr_scale * lr to lr
    total_updates: int = 0  # length of the schedule; 0: trainer.max_updates (or epochs x updates per epoch)
    init_lr_scale: Optional[float] = None  # lr at update 0 / lr; None: 0 (tri_stage: 0.01)
    final_lr_scale: Optional[float] = None  # lr at the end / lr; None: 0 (tri_stage: 0.01)
    hold_updates: int = 0  # tri_stage: updates at peak lr after warmup
    decay_updates: int = 0  # tri_stage: updates of exponential decay after the hold
    phase_ratio: Optional[tuple[float, float, float]] = None  # tri_stage: (warmup, hold, decay) fractions


@dataclass
class TrainerConfig:
    """The training loop: batching, precision, validation, checkpoints, logging.

    Batching: a Task's dataset is cut into length-bucketed batches of at most ``max_tokens``
    (``speechssl.data.MaxTokensBatchSampler``); a ``speechssl.data.MultiSourceDataset`` gets a
    ``MultiSourceBatchSampler`` instead: one source per batch, sources interleaved by their
    proportions, each source optionally with its own ``max_tokens`` (set on the dataset).

    What the Task adds (see ``speechssl.train.task.Task``): frozen modules (never optimised,
    never DDP-synchronised, in eval mode, checkpointed by reference + sha256), the optimizer's
    parameter groups (``optim.decay_norm_bias``, ``optim.layer_decay``), ``on_update`` after each
    optimizer step (before validation and checkpoints), and ``batch_coupled`` for contrastive
    losses: under DDP its ``Task.gather`` returns every rank's items with gradients, and
    ``update_freq`` accumulates losses without enlarging the set of negatives.

    Early stopping: with ``patience=N > 0`` training stops after ``N`` validations in a row
    that did not improve ``best_metric`` (ties broken by the validation loss, as for
    ``checkpoint_best.pt``); the stop is checkpointed, so a resumed run stays stopped.
    """

    seed: int = 1  # seeds model initialisation, data order and all RNGs
    max_updates: int = 0  # stop after this many optimizer updates (0: no limit)
    max_epochs: int = 0  # stop after this many epochs (0: no limit); at least one limit must be set
    max_tokens: int = 1_400_000  # batch bound: items x longest item (samples at 16 kHz, incl. padding)
    max_sentences: Optional[int] = None  # optional bound on items per batch
    update_freq: int = 1  # batches accumulated per update (per rank)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast dtype; fp16 (GPU only) uses a GradScaler
    device: str = "auto"  # "auto": cuda:LOCAL_RANK when CUDA is available, else cpu; or "cpu", "cuda:1", ...
    train_split: str = "train"
    valid_split: Optional[str] = "valid"  # None: no validation
    validate_every_updates: int = 0  # also validate every N updates (0: only at epoch ends)
    validate_every_epochs: int = 1  # validate every N epochs (0: never at epoch ends)
    save_every_updates: int = 0  # also save a checkpoint every N updates (0: only at epoch ends)
    save_every_epochs: int = 1  # save at the end of every N epochs (0: never at epoch ends)
    keep_last: int = 2  # numbered checkpoints kept (checkpoint_<updates>.pt); -1: keep all
    best_metric: str = "loss"  # validation metric that picks checkpoint_best.pt
    maximize_best_metric: bool = False  # True when a higher best_metric is better (accuracy)
    patience: int = 0  # early stopping: stop after this many validations in a row without a better best_metric (0: never)
    max_consecutive_nan: int = 5  # stop with an error after this many non-finite losses in a row
    log_every_updates: int = 10  # interval of train.log lines and tensorboard scalars
    progress_bar: bool = True  # tqdm bar on rank 0 (only when stderr is a terminal)
    tensorboard: bool = True  # write scalars under <exp_dir>/tensorboard
    num_workers: int = 0  # DataLoader worker processes
    scan_oom_batches: int = 0  # before training, run the N largest batches (forward + backward) to fail fast on OOM
    oversize: Literal["error", "skip"] = "error"  # an item larger than max_tokens: error, or skip it (logged)
    resume: bool = True  # continue from <exp_dir>/checkpoint_last.pt when it exists
    find_unused_parameters: bool = False  # DDP: allow parameters that get no gradient in a step
