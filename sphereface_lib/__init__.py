"""SphereFace companion library: A-Softmax loss family, SphereFace backbones, training and evaluation.

Liu et al., "SphereFace: Deep Hypersphere Embedding for Face Recognition", CVPR 2017.
Each subpackage lists its public names in ``__all__``; they are re-exported here. Every name loads on first
use (PEP 562, through ``lazy_loader``), so ``import sphereface_lib`` costs little: torch, scikit-learn and
the rest are imported by the parts that need them. ``EAGER_IMPORT=1`` in the environment loads all at once.
"""

import importlib

import lazy_loader as _lazy

__version__ = "0.1.0"

_REEXPORTED = ["losses", "data", "training", "evaluation"]  # their __init__ files load nothing
_EXPORTS = {
    "backbones": ["SphereFaceNet", "count_parameters", "create_backbone", "list_backbones", "sphereface"],
    **{sub: importlib.import_module(f"{__name__}.{sub}").__all__ for sub in _REEXPORTED},
}
__getattr__, __dir__, _ = _lazy.attach(
    __name__, submodules=["backbones", "companion", "errors", *_REEXPORTED], submod_attrs=_EXPORTS)
__all__ = [name for names in _EXPORTS.values() for name in names]
