"""Training, evaluation, checkpoints and transfer learning."""

from slimkit.train.callbacks import Callback, FreezeBackbone
from slimkit.train.checkpoint import (
    CheckpointMeta,
    LoadedCheckpoint,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
)
from slimkit.train.metrics import EvalResult
from slimkit.train.trainer import FitResult, TrainConfig, Trainer, evaluate, fit
from slimkit.train.transfer import classifier_of, set_backbone_trainable

__all__ = [
    "Callback",
    "CheckpointMeta",
    "EvalResult",
    "FitResult",
    "FreezeBackbone",
    "LoadedCheckpoint",
    "TrainConfig",
    "Trainer",
    "classifier_of",
    "evaluate",
    "fit",
    "load_checkpoint",
    "read_checkpoint_meta",
    "save_checkpoint",
    "set_backbone_trainable",
]
