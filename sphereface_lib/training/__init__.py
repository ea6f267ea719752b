"""Training: the typed config, the loop (AMP, DDP, checkpoints, divergence guard) and the model cache."""

from .cache import cache_key, train_cached
from .config import ConfigError, DataConfig, HeadConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from .trainer import (
    RunDirBusy, RunFileError, TrainingDiverged, TrainResult, learning_rate, load_checkpoint, train)

__all__ = [
    "ConfigError", "DataConfig", "HeadConfig", "ModelConfig", "OptimConfig", "RunConfig", "RunDirBusy",
    "RunFileError", "TrainConfig", "TrainResult", "TrainingDiverged", "cache_key", "learning_rate",
    "load_checkpoint", "train", "train_cached",
]
