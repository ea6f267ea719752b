"""Datasets: the packed format, protocol files, samplers; the synthetic generator lives in ``data.synthetic``."""

from .packed import Manifest, PackedDataset, PackedFormatError, PackedWriter
from .samplers import BatchSampler, create_sampler, register_sampler

__all__ = [
    "BatchSampler", "create_sampler", "register_sampler",
    "Manifest", "PackedDataset", "PackedFormatError", "PackedWriter"]
