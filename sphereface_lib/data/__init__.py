"""Datasets: the packed format, protocol files, samplers; the synthetic generator lives in ``data.synthetic``.

Names load on first use (see the package's ``__init__``).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(__name__, submodules=["synthetic"], submod_attrs={
    "packed": ["Manifest", "PackedDataset", "PackedFormatError", "PackedWriter"],
    "protocols": [
        "PairList", "ProtocolFormatError", "lfw_key", "pair_rows", "read_lfw_pairs", "read_ytf_splits",
        "video_rows", "write_lfw_pairs", "write_ytf_splits", "ytf_frame_key",
    ],
    "sources": ["open_packed"],
    "samplers": ["BatchSampler", "EpochShuffleSampler", "PKSampler", "create_sampler", "register_sampler"],
})
__all__.remove("synthetic")
