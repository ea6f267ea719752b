"""Evaluation: test features (flip-concatenated), LFW / YTF 10-fold verification, ROC, MegaFace.

Names load on first use (see the package's ``__init__``): MegaFace needs torch, verification does not.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "far": ["usable_far"],
    "features": ["extract_features", "images_to_tensor"],
    "megaface": ["MEGAFACE_DISTRACTORS", "MegaFaceResult", "megaface_evaluate"],
    "verification": [
        "FoldAccuracy", "RocResult", "cosine_scores", "k_fold_accuracy", "lfw_10fold", "roc", "video_features",
        "ytf_10fold",
    ],
})
