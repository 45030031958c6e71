"""Patch geometry: starts stay valid, reads are padded, only the patch region is read."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from medseg.sampling.patches import centered_start, random_start, read_patch, start_range


@given(size=st.integers(1, 40), patch=st.integers(1, 40), seed=st.integers(0, 1000))
@settings(max_examples=200, deadline=None)
def test_random_start_keeps_patch_inside_or_covering(size: int, patch: int, seed: int) -> None:
    (start,) = random_start((size,), (patch,), np.random.default_rng(seed))
    if size >= patch:
        assert start >= 0 and start + patch <= size
    else:
        assert start <= 0 and start + patch >= size  # the whole case is in the patch
    lo, hi = start_range(size, patch)
    assert lo <= start <= hi


def test_centered_start_puts_center_in_middle_when_possible() -> None:
    assert centered_start((40, 40), (10, 10), (20, 25)) == (15, 20)
    assert centered_start((40, 40), (10, 10), (1, 39)) == (0, 30)  # clipped at the borders


def test_read_patch_pads_outside_and_matches_inside(tmp_path) -> None:
    arr = np.arange(2 * 4 * 5 * 6, dtype=np.float32).reshape(2, 4, 5, 6)
    np.save(tmp_path / "a.npy", arr)
    mm = np.load(tmp_path / "a.npy", mmap_mode="r")
    patch = read_patch(mm, (-2, 1, 3), (8, 3, 4), pad_value=-1)
    assert patch.shape == (2, 8, 3, 4)
    np.testing.assert_array_equal(patch[:, 2:6, :, :3], arr[:, :, 1:4, 3:6])
    assert (patch[:, :2] == -1).all() and (patch[:, 6:] == -1).all() and (patch[..., 3] == -1).all()
    assert isinstance(patch, np.ndarray) and not isinstance(patch, np.memmap)


def test_read_patch_inside_is_a_plain_slice() -> None:
    arr = np.random.default_rng(0).normal(size=(1, 10, 10, 10))
    np.testing.assert_array_equal(read_patch(arr, (2, 3, 4), (5, 5, 5)), arr[:, 2:7, 3:8, 4:9])
