"""Datasets: the packed format, protocol files, samplers; the synthetic generator lives in ``data.synthetic``."""

from .packed import Manifest, PackedDataset, PackedFormatError, PackedWriter
from .protocols import (
    PairList, ProtocolFormatError, lfw_key, pair_rows, read_lfw_pairs, read_ytf_splits, video_rows,
    write_lfw_pairs, write_ytf_splits, ytf_frame_key,
)
from .sources import open_packed
from .samplers import BatchSampler, EpochShuffleSampler, PKSampler, create_sampler, register_sampler

__all__ = [
    "BatchSampler", "EpochShuffleSampler", "PKSampler", "create_sampler", "register_sampler",
    "Manifest", "PackedDataset", "open_packed", "PackedFormatError", "PackedWriter",
    "PairList", "ProtocolFormatError", "lfw_key", "pair_rows", "read_lfw_pairs", "read_ytf_splits", "video_rows",
    "write_lfw_pairs", "write_ytf_splits", "ytf_frame_key",
]
