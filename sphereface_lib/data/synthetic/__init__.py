"""The built-in synthetic face dataset: procedural identities on the SphereFace 112x96 template, and
identity-disjoint stand-ins for CASIA-WebFace, LFW, YouTube Faces and MegaFace (docs/synthetic.md)."""

from .faces import (
    GENERATOR_VERSION, OUTPUT_SIZES, TEMPLATE_POINTS, identity_latent, image_nuisance, render, render_images,
    render_video, video_nuisance,
)
from .splits import (
    DISTRACTOR_OFFSET, SIZES, SyntheticBenchmark, SyntheticConfig, SyntheticDistractors, identity_name,
    synthetic_benchmark, train_counts,
)

__all__ = [
    "DISTRACTOR_OFFSET", "GENERATOR_VERSION", "OUTPUT_SIZES", "SIZES", "SyntheticBenchmark", "SyntheticConfig",
    "SyntheticDistractors", "TEMPLATE_POINTS", "identity_latent", "identity_name", "image_nuisance", "render",
    "render_images", "render_video", "synthetic_benchmark", "train_counts", "video_nuisance",
]
