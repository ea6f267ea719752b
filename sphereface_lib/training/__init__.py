"""Training: the typed config, the loop (AMP, DDP, checkpoints, divergence guard), the model cache and
independent cached models trained side by side.

Names load on first use (see the package's ``__init__``).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "cache": ["CACHE_THREADS", "cache_key", "train_cached"],
    "config": ["ConfigError", "DataConfig", "HeadConfig", "ModelConfig", "OptimConfig", "RunConfig", "TrainConfig"],
    "parallel": ["train_cached_many", "train_missing"],
    "trainer": ["RunDirBusy", "RunFileError", "TrainingDiverged", "TrainResult", "learning_rate", "load_checkpoint",
                "train", "wait_for_all_ranks"],
})
