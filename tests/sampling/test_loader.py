"""Batches: shapes, foreground oversampling, padding, 2D slices, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.sampling import (
    AugmentSettings,
    EpochSampler,
    PatchBatches,
    SamplerSettings,
    make_batch,
    make_loader,
)
from tests.conftest import sphere_label
from tests.sampling.synthetic import MemoryCache, sphere_cases


def small_foreground_cache() -> MemoryCache:
    """Big cases with a tiny ball, so random patches rarely contain foreground."""
    images, labels = {}, {}
    for i in range(4):
        lab = sphere_label((48, 48, 48), center=(10 + 5 * i, 30, 12), radius=2)
        lab[lab > 0] = 1 + i % 2
        images[f"c{i}"] = np.random.default_rng(i).normal(size=(1, 48, 48, 48)).astype("f4")
        labels[f"c{i}"] = lab[None]
    return MemoryCache(images, labels)


@pytest.mark.parametrize("fraction", [1 / 3, 0.5, 1.0])
def test_foreground_fraction_is_at_least_the_configured_one(fraction: float) -> None:
    cache = small_foreground_cache()
    settings = SamplerSettings((12, 12, 12), batch_size=6, foreground_fraction=fraction)
    rng = np.random.default_rng(0)
    with_fg = []
    for _ in range(20):
        _, label = make_batch(cache, cache.case_ids, settings, rng)
        with_fg += [bool((lab > 0).any()) for lab in label]
    assert np.mean(with_fg) >= fraction
    # the forced samples are the last ones of every batch and always contain foreground
    forced = np.array(with_fg).reshape(20, 6)[:, 6 - settings.n_foreground():]
    assert forced.all()


def test_no_oversampling_gives_mostly_background() -> None:
    cache = small_foreground_cache()
    settings = SamplerSettings((12, 12, 12), batch_size=6, foreground_fraction=0.0)
    _, label = make_batch(cache, cache.case_ids, settings, np.random.default_rng(1))
    assert settings.n_foreground() == 0 and (label > 0).float().mean() < 0.05


def test_case_smaller_than_patch_is_padded_and_whole() -> None:
    cache = sphere_cases(n=2, shape=(10, 12, 8))
    settings = SamplerSettings((16, 16, 16), batch_size=4)
    image, label = make_batch(cache, cache.case_ids, settings, np.random.default_rng(0))
    assert image.shape == (4, 1, 16, 16, 16) and label.shape == (4, 1, 16, 16, 16)
    assert image.dtype == torch.float32 and label.dtype == torch.uint8
    total = sum(int((cache.label(c) > 0).sum()) for c in cache.case_ids)
    assert all(int((lab > 0).sum()) in {int((cache.label(c) > 0).sum()) for c in cache.case_ids}
               for lab in label) and total > 0


def test_2d_batches_are_slices_along_the_slice_axis() -> None:
    cache = sphere_cases(n=3, shape=(20, 24, 28))
    settings = SamplerSettings((24, 28), batch_size=8, slice_axis=0)
    image, label = make_batch(cache, cache.case_ids, settings, np.random.default_rng(0))
    assert image.shape == (8, 1, 24, 28) and label.shape == (8, 1, 24, 28)
    # every 2D patch is an exact slice of one of the cases
    slices = {c: cache.image(c)[0] for c in cache.case_ids}
    for img in image[:, 0].numpy():
        assert any(np.array_equal(img, vol[k]) for vol in slices.values() for k in range(20))


def test_batches_are_deterministic_and_independent_of_workers() -> None:
    cache = sphere_cases(n=4)
    settings = SamplerSettings((16, 16, 16), batch_size=3)
    batches = PatchBatches(cache, cache.case_ids, settings, AugmentSettings(), seed=7)
    serial = [b["image"] for b in make_loader(batches, EpochSampler(4, epoch=1), num_workers=0)]
    parallel = [b["image"] for b in make_loader(batches, EpochSampler(4, epoch=1), num_workers=2)]
    for a, b in zip(serial, parallel, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(batches[5]["image"], serial[1])  # epoch 1 starts at batch 4
    assert not torch.equal(batches[4]["image"], batches[5]["image"])


def test_kept_batches_stay_intact_when_the_shared_ring_wraps_around() -> None:
    cache = sphere_cases(n=4)
    batches = PatchBatches(cache, cache.case_ids, SamplerSettings((8, 8, 8), batch_size=2),
                           AugmentSettings(), seed=3)
    loader = make_loader(batches, EpochSampler(12), num_workers=2, prefetch_factor=1)
    assert batches.ring is not None and batches.ring.size < 12  # each slot is reused
    kept = list(loader)
    assert loader.fallbacks == 0  # every batch came through the ring
    for i, batch in enumerate(kept):
        expected = batches[i]  # computed in-process, outside the ring
        torch.testing.assert_close(batch["image"], expected["image"])
        assert torch.equal(batch["label"], expected["label"])


def test_without_room_in_dev_shm_workers_pipe_the_same_batches(monkeypatch) -> None:
    import medseg.sampling.ring as ring_module

    monkeypatch.setattr(ring_module, "shm_free_bytes", lambda path="": 4096)  # tiny /dev/shm
    cache = sphere_cases(n=4)
    batches = PatchBatches(cache, cache.case_ids, SamplerSettings((8, 8, 8), batch_size=2),
                           AugmentSettings(), seed=3)
    loader = make_loader(batches, EpochSampler(6), num_workers=2, prefetch_factor=2)
    assert loader.transport == "pipe" and batches.ring is None
    kept = list(loader)
    assert loader.fallbacks == 6  # every batch came through a pipe
    for i, got in enumerate(kept):
        expected = batches[i]  # computed in-process
        assert not got["image"].is_shared()
        torch.testing.assert_close(got["image"], expected["image"])
        assert torch.equal(got["label"], expected["label"])


def test_pickled_batches_do_not_carry_open_cases() -> None:
    import pickle

    cache = sphere_cases(n=3)
    batches = PatchBatches(cache, cache.case_ids, SamplerSettings((8, 8, 8), 2), seed=1)
    batches.open_all()
    clone = pickle.loads(pickle.dumps(batches))
    assert len(clone.opened) == 0 and len(batches.opened) == 3
    torch.testing.assert_close(clone[4]["image"], batches[4]["image"])


def test_workers_map_the_pages_of_open_cases_within_a_budget(tmp_path) -> None:
    from medseg.sampling import OpenCases

    cache = sphere_cases(n=3, shape=(16, 16, 16))
    for case in cache.case_ids:  # memmaps, as the preprocessed cache gives
        for kind, arrays in (("img", cache.images), ("seg", cache.labels)):
            np.save(tmp_path / f"{case}_{kind}.npy", arrays[case])
            arrays[case] = np.load(tmp_path / f"{case}_{kind}.npy", mmap_mode="r")
    opened = OpenCases(cache)
    for case in cache.case_ids:
        opened[case]
    image_bytes = cache.images[cache.case_ids[0]].nbytes
    label_bytes = cache.labels[cache.case_ids[0]].nbytes
    assert opened.map_pages() == 3 * (image_bytes + label_bytes)
    assert opened.map_pages(budget_bytes=image_bytes + label_bytes) == image_bytes + label_bytes
