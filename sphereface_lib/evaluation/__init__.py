"""Evaluation: test features (flip-concatenated), LFW / YTF 10-fold verification, ROC, MegaFace."""

from .features import extract_features, images_to_tensor
from .megaface import MEGAFACE_DISTRACTORS, MegaFaceResult, megaface_evaluate
from .verification import (
    FoldAccuracy,
    RocResult,
    cosine_scores,
    k_fold_accuracy,
    lfw_10fold,
    roc,
    video_features,
    ytf_10fold,
)

__all__ = [
    "extract_features",
    "images_to_tensor",
    "MEGAFACE_DISTRACTORS",
    "MegaFaceResult",
    "megaface_evaluate",
    "FoldAccuracy",
    "RocResult",
    "cosine_scores",
    "k_fold_accuracy",
    "lfw_10fold",
    "roc",
    "video_features",
    "ytf_10fold",
]
