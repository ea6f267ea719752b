"""Datasets: the packed format, protocol files, samplers; the synthetic generator lives in ``data.synthetic``."""

from .packed import Manifest, PackedDataset, PackedFormatError, PackedWriter

__all__ = ["Manifest", "PackedDataset", "PackedFormatError", "PackedWriter"]
