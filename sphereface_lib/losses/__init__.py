"""Heads (classifier + loss): the A-Softmax family and the losses the paper compares against."""

from .angular import ASoftmax, LambdaSchedule, ModifiedSoftmax, Softmax, cos_m_theta, psi
from .base import Head, create_head, list_heads, register_head
from .additive import ArcFace, CosFace, arc_margin
from .large_margin import LSOFTMAX_SCHEDULE, LSoftmax
from .metric import SoftmaxCenter, SoftmaxContrastive, Triplet, pairwise_squared_distances

__all__ = [
    "ASoftmax", "Head", "LambdaSchedule", "ModifiedSoftmax", "Softmax",
    "cos_m_theta", "create_head", "list_heads", "psi", "register_head",
    "ArcFace", "CosFace", "arc_margin", "LSOFTMAX_SCHEDULE", "LSoftmax",
    "SoftmaxCenter", "SoftmaxContrastive", "Triplet", "pairwise_squared_distances",
]
