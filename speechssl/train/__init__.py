"""Training: the Task contract, the shared Trainer and its configuration."""
from speechssl.train.config import OptimConfig, ScheduleConfig, TrainerConfig
from speechssl.train.schedule import LRSchedule
from speechssl.train.task import PretrainContext, SizedDataset, Task
from speechssl.train.trainer import NonFiniteLossError, Trainer

__all__ = ["Task", "PretrainContext", "SizedDataset", "Trainer", "TrainerConfig", "OptimConfig", "ScheduleConfig", "LRSchedule",
           "NonFiniteLossError"]
