"""The packed dataset format: round trip, atomic writes, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sphereface_lib import PackedDataset, PackedFormatError, PackedWriter
from sphereface_lib.data import create_sampler


def _write(root, n=6, channels=3):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 8, 6, channels), dtype=np.uint8)
    labels = np.arange(n) % 3
    with PackedWriter(root, height=8, width=6, channels=channels, source="test", identities=["a", "b", "c"]) as w:
        w.add(images[:4], labels[:4], [f"id/{i:04d}" for i in range(4)])
        w.add(images[4:], labels[4:], [f"id/{i:04d}" for i in range(4, n)])
    return images, labels


def test_round_trip(tmp_path) -> None:
    images, labels = _write(tmp_path / "ds")
    ds = PackedDataset(tmp_path / "ds")
    assert len(ds) == 6 and ds.num_identities == 3 and ds.manifest.image_shape == (8, 6, 3)
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.index_of("id/0005") == 5 and ds.identities == ["a", "b", "c"]
    assert not (tmp_path / "ds.partial").exists()


def test_grey_images_accept_hw_batches(tmp_path) -> None:
    with PackedWriter(tmp_path / "g", height=4, width=4, channels=1, source="t") as w:
        w.add(np.zeros((2, 4, 4), np.uint8), [0, 1])
    assert PackedDataset(tmp_path / "g").images.shape == (2, 4, 4, 1)


def test_failed_write_leaves_nothing(tmp_path) -> None:
    with pytest.raises(RuntimeError):
        with PackedWriter(tmp_path / "x", height=4, width=4, channels=3, source="t") as w:
            w.add(np.zeros((2, 4, 4, 3), np.uint8), [0, 1])
            raise RuntimeError("interrupted")
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()


def test_bad_batches_are_rejected(tmp_path) -> None:
    w = PackedWriter(tmp_path / "b", height=4, width=4, channels=3, source="t")
    with pytest.raises(ValueError, match="uint8 of shape"):
        w.add(np.zeros((2, 4, 4, 3), np.float32), [0, 1])
    with pytest.raises(ValueError, match="one label per image"):
        w.add(np.zeros((2, 4, 4, 3), np.uint8), [0])
    w.abort()


def test_reader_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(PackedFormatError, match="manifest.json is missing"):
        PackedDataset(tmp_path)
    _write(tmp_path / "ds")
    with open(tmp_path / "ds" / "images.u8", "ab") as f:
        f.write(b"x")
    with pytest.raises(PackedFormatError, match="bytes, the manifest implies"):
        PackedDataset(tmp_path / "ds")
    with pytest.raises(FileExistsError):
        PackedWriter(tmp_path / "ds", height=4, width=4, channels=3, source="t")


def test_unknown_key_names_the_dataset(tmp_path) -> None:
    _write(tmp_path / "ds")
    with pytest.raises(KeyError, match="no image with key 'nobody/0001'"):
        PackedDataset(tmp_path / "ds").index_of("nobody/0001")


def test_manifest_is_plain_json(tmp_path) -> None:
    _write(tmp_path / "ds")
    raw = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert raw["num_images"] == 6 and raw["source"] == "test" and raw["format_version"] == 1


def test_random_sampler_covers_each_epoch_and_is_a_function_of_iteration() -> None:
    labels = np.arange(10)
    s = create_sampler("random", labels, 4, seed=3)
    first = np.concatenate([s.indices(i) for i in range(5)])  # 20 draws = 2 epochs
    assert sorted(first[:10]) == list(range(10)) and sorted(first[10:]) == list(range(10))
    again = create_sampler("random", labels, 4, seed=3)
    np.testing.assert_array_equal(again.indices(3), s.indices(3))
    assert not np.array_equal(create_sampler("random", labels, 4, seed=4).indices(0), s.indices(0))
    with pytest.raises(ValueError, match="unknown sampler"):
        create_sampler("nope", labels, 4, 0)


def test_open_packed_reads_folders_and_names_bad_synthetic_specs(tmp_path, monkeypatch) -> None:
    from sphereface_lib.data import sources

    _write(tmp_path / "ds")
    assert len(sources.open_packed(tmp_path / "ds")) == 6
    with pytest.raises(ValueError, match="unknown synthetic size 'huge'"):
        sources.open_packed("synthetic:huge")
    with pytest.raises(ValueError, match="unknown split 'test'"):
        sources.open_packed("synthetic:smoke/test")
    monkeypatch.setattr(sources, "SYNTHETIC_CACHE", tmp_path / "cache")
    lfw = sources.open_packed("synthetic:smoke/lfw")
    assert lfw.manifest.source == "synthetic-lfw" and (tmp_path / "cache").is_dir()
