"""The "pk" sampler: P identities x K images per batch, a pure function of (seed, iteration)."""

from __future__ import annotations

import numpy as np
import pytest

from sphereface_lib.data.samplers import PKSampler, create_sampler

# 12 identities with 1..12 images each, rows shuffled so that identities are not contiguous.
COUNTS = np.arange(1, 13)
LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(12), COUNTS)) + 100


def test_batches_are_p_blocks_of_k_images_of_distinct_identities() -> None:
    sampler = create_sampler("pk", LABELS, batch_size=20, seed=3, k=4)
    assert isinstance(sampler, PKSampler) and (sampler.p, sampler.k) == (5, 4)
    for it in range(50):
        rows = sampler.indices(it)
        assert rows.dtype == np.int64 and rows.shape == (20,)
        blocks = LABELS[rows].reshape(5, 4)
        assert (blocks == blocks[:, :1]).all()  # each block is one identity
        assert len(set(blocks[:, 0])) == 5  # P distinct identities
        for block_rows, identity in zip(rows.reshape(5, 4), blocks[:, 0]):
            if (LABELS == identity).sum() >= 4:  # enough images: no repeats
                assert len(set(block_rows)) == 4


def test_small_identities_are_sampled_with_replacement() -> None:
    labels = np.array([0, 1, 1, 2, 2, 2])
    rows = create_sampler("pk", labels, batch_size=9, seed=0, k=3).indices(0)
    assert sorted(set(labels[rows])) == [0, 1, 2]
    assert (rows[labels[rows] == 0] == 0).all()  # one image, drawn three times


def test_pure_function_of_seed_and_iteration() -> None:
    a = create_sampler("pk", LABELS, batch_size=12, seed=7, k=3)
    b = create_sampler("pk", LABELS, batch_size=12, seed=7, k=3)
    forward = [a.indices(i) for i in range(10)]
    backward = [b.indices(i) for i in reversed(range(10))][::-1]
    assert all(np.array_equal(x, y) for x, y in zip(forward, backward))
    assert not np.array_equal(a.indices(0), a.indices(1))
    assert not np.array_equal(a.indices(0), create_sampler("pk", LABELS, 12, seed=8, k=3).indices(0))


def test_every_identity_is_drawn_about_equally() -> None:
    sampler = create_sampler("pk", LABELS, batch_size=8, seed=1, k=2)
    drawn = np.concatenate([LABELS[sampler.indices(i)[::2]] for i in range(600)])
    frequency = np.bincount(drawn - 100, minlength=12) / 600
    np.testing.assert_allclose(frequency, 4 / 12, atol=0.07)


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 40, "k": 2}, "12 identities, fewer than P"),
    ({"batch_size": 10, "k": 4}, "multiple of k"),
    ({"batch_size": 8, "k": 0}, "k \\(images per identity\\)"),
])
def test_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_sampler("pk", LABELS, seed=0, **kwargs)
