"""Heads (classifier + loss): the A-Softmax family and the losses the paper compares against."""

from .angular import ASoftmax, LambdaSchedule, ModifiedSoftmax, Softmax, cos_m_theta, psi
from .base import Head, create_head, list_heads, register_head

__all__ = [
    "ASoftmax", "Head", "LambdaSchedule", "ModifiedSoftmax", "Softmax",
    "cos_m_theta", "create_head", "list_heads", "psi", "register_head",
]
