"""Heads (classifier + loss): the A-Softmax family and the losses the paper compares against.

Names load on first use (see the package's ``__init__``); the first one loads every head module, so that
:func:`create_head` and :func:`list_heads` see every registered head.
"""

import importlib

import lazy_loader as _lazy

_MODULES = {
    "angular": ["ASoftmax", "LambdaSchedule", "ModifiedSoftmax", "Softmax", "cos_m_theta", "psi"],
    "base": ["Head", "create_head", "list_heads", "register_head"],
    "additive": ["ArcFace", "CosFace", "arc_margin"],
    "large_margin": ["LSOFTMAX_SCHEDULE", "LSoftmax"],
    "metric": ["SoftmaxCenter", "SoftmaxContrastive", "Triplet", "gather_batch", "pairwise_squared_distances"],
}
_lazy_getattr, __dir__, __all__ = _lazy.attach(__name__, submod_attrs=_MODULES)


def __getattr__(name: str) -> object:
    if name in __all__:
        for module in _MODULES:  # each registers its heads on import
            importlib.import_module(f"{__name__}.{module}")
    return _lazy_getattr(name)
