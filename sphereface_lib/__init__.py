"""SphereFace companion library: A-Softmax loss family, SphereFace backbones, training and evaluation.

Liu et al., "SphereFace: Deep Hypersphere Embedding for Face Recognition", CVPR 2017.
Each subpackage lists its public names in ``__all__``; they are re-exported here.
"""

from .backbones import SphereFaceNet, count_parameters, create_backbone, list_backbones, sphereface
from .data import *  # noqa: F401,F403
from .data import __all__ as _data_all
from .evaluation import *  # noqa: F401,F403
from .evaluation import __all__ as _evaluation_all
from .losses import *  # noqa: F401,F403
from .losses import __all__ as _losses_all
from .training import *  # noqa: F401,F403
from .training import __all__ as _training_all

__version__ = "0.1.0"
__all__ = [
    "SphereFaceNet", "count_parameters", "create_backbone", "list_backbones", "sphereface",
    *_losses_all, *_data_all, *_training_all, *_evaluation_all]
