"""Batches of training patches from the preprocessed cache, and their DataLoader.

Batch ``i`` is a pure function of ``(seed, i)``: cases, patch positions and augmentation
are drawn from generators seeded with both, so results do not depend on the number of
workers and a resumed run sees exactly the batches it would have seen. Epoch ``e`` of
``n`` batches reads batches ``e*n .. e*n+n-1`` (see :class:`EpochSampler`).
"""

from __future__ import annotations

import ctypes
import math
import mmap
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from medseg.sampling.augment import AugmentSettings, augment_batch_
from medseg.sampling.patches import centered_start, patch_size_3d, random_start, read_patch
from medseg.sampling.ring import Piped, RingLoader, SharedRing, Ticket, make_ring


class PatchSource(Protocol):
    """What the sampler needs from a cache (``medseg.preprocess`` ``Cache`` provides it)."""

    def image(self, case: str, mmap: bool = True) -> np.ndarray: ...
    def label(self, case: str, mmap: bool = True) -> np.ndarray: ...
    def foreground(self, case: str) -> Mapping[int, np.ndarray]: ...


@dataclass(frozen=True)
class SamplerSettings:
    """Patch size, batch size, foreground oversampling and (2D) slice axis."""

    patch_size: tuple[int, ...]
    batch_size: int
    foreground_fraction: float = 1 / 3
    slice_axis: int | None = None  # set for 2D configurations

    @classmethod
    def from_config(cls, config: Mapping[str, Any], foreground_fraction: float = 1 / 3
                    ) -> SamplerSettings:
        """Settings from one plan configuration (``plan["configurations"]["3d"]``)."""
        patch = tuple(int(p) for p in config["patch_size"])
        return cls(patch, int(config["batch_size"]), foreground_fraction,
                   config.get("slice_axis") if len(patch) == 2 else None)

    def n_foreground(self) -> int:
        """Samples per batch forced to be centred on foreground (at least the fraction)."""
        return min(self.batch_size, math.ceil(self.batch_size * self.foreground_fraction - 1e-9))


def _foreground_center(
    fg: Mapping[int, np.ndarray], rng: np.random.Generator
) -> np.ndarray | None:
    """A random voxel of a random foreground class present in the case (None if none)."""
    classes = sorted(k for k, coords in fg.items() if len(coords))
    if not classes:
        return None
    coords = fg[classes[int(rng.integers(len(classes)))]]
    return coords[int(rng.integers(len(coords)))]


def touch_pages(array: np.ndarray) -> None:
    """Read one byte of every memory page of a C-contiguous array (e.g. a memmap), which
    maps those pages into this process."""
    if array.size and array.flags.c_contiguous:
        np.add.reduce(array.reshape(-1).view(np.uint8)[:: mmap.PAGESIZE])


class OpenCases:
    """Per-process LRU of opened cases (memmaps and foreground locations).

    Opening a ``.npy`` memmap and reading the ``_fg.npz`` cost more than cutting a small
    patch, so each process keeps its most recently used cases open; the patch itself is
    still read from the memmap (only its region is touched).
    """

    def __init__(self, source: PatchSource, max_open: int = 256) -> None:
        self.source, self.max_open = source, max_open
        self._open: OrderedDict[str, tuple[np.ndarray, np.ndarray, Mapping[int, np.ndarray]]]
        self._open = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the open cases (spawned workers reopen them; pickling a memmap
        would copy the whole array)."""
        return {**self.__dict__, "_open": OrderedDict()}

    def map_pages(self, budget_bytes: int = 2**30) -> int:
        """Touch every page of the open cases' memmaps (up to ``budget_bytes`` in all) and
        return the bytes touched. A forked worker inherits the memory maps but not their
        page-table entries, so without this its first reads of every page fault one by one
        (cutting a batch of four 40x56x40 patches took 0.6 instead of 0.22 ms for the first
        few hundred batches); touching 63 MB of cached cases takes ~15 ms."""
        touched = 0
        for arrays in self._open.values():
            for array in (a for a in arrays[:2] if a is not None):  # image, label
                if touched + array.nbytes > budget_bytes:
                    return touched
                touch_pages(array)
                touched += array.nbytes
        return touched

    def __getitem__(self, case: str) -> tuple[np.ndarray, np.ndarray, Mapping[int, np.ndarray]]:
        """(image memmap, label memmap, foreground locations) of ``case``."""
        if case in self._open:
            self._open.move_to_end(case)
            return self._open[case]
        entry = (self.source.image(case, mmap=True), self.source.label(case, mmap=True),
                 self.source.foreground(case))
        self._open[case] = entry
        if len(self._open) > self.max_open:
            self._open.popitem(last=False)
        return entry


def sample_patch(
    cases: OpenCases, case: str, settings: SamplerSettings, foreground: bool,
    rng: np.random.Generator, image_out: np.ndarray, label_out: np.ndarray,
) -> None:
    """Cut one patch of ``case`` into ``image_out`` (C, *box) and ``label_out`` (1, *box),
    where the box is the patch size with a size-1 slice axis for 2D configurations."""
    image, label, fg = cases[case]
    box = patch_size_3d(settings.patch_size, settings.slice_axis)
    center = _foreground_center(fg, rng) if foreground else None
    shape = image.shape[1:]
    start = random_start(shape, box, rng) if center is None else centered_start(shape, box, center)
    read_patch(image, start, box, 0.0, out=image_out)
    read_patch(label, start, box, 0, out=label_out)


def make_batch(
    source: PatchSource | OpenCases, cases: Sequence[str], settings: SamplerSettings,
    rng: np.random.Generator, picks: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A float32 image batch (B, C, *patch) and a uint8 label batch (B, 1, *patch).

    ``picks`` (indices into ``cases``, one per sample) are drawn from ``rng`` when not
    given. The last ``n_foreground()`` samples are centred on foreground, the rest are
    random. Patches are written straight into the preallocated batch arrays.
    """
    opened = source if isinstance(source, OpenCases) else OpenCases(source)
    n_fg = settings.n_foreground()
    if picks is None:
        picks = rng.integers(len(cases), size=settings.batch_size)
    box = patch_size_3d(settings.patch_size, settings.slice_axis)
    channels = opened[cases[int(picks[0])]][0].shape[0]
    image = np.empty((settings.batch_size, channels, *box), dtype=np.float32)
    label = np.empty((settings.batch_size, 1, *box), dtype=np.uint8)
    for i, c in enumerate(picks):
        sample_patch(opened, cases[int(c)], settings, i >= settings.batch_size - n_fg, rng,
                     image[i], label[i])
    if settings.slice_axis is not None:
        axis = settings.slice_axis + 2
        image, label = image.squeeze(axis), label.squeeze(axis)
    return torch.from_numpy(image), torch.from_numpy(label)


def annotated_classes(foreground: Mapping[int, np.ndarray], n_classes: int) -> np.ndarray:
    """(K,) bool: background and the classes present in a case's label map (its
    foreground locations); a class absent from the case is not annotated there."""
    mask = np.zeros(n_classes, dtype=bool)
    mask[0] = True
    for k, coords in foreground.items():
        if 0 < k < n_classes and len(coords):
            mask[k] = True
    return mask


class PatchBatches(Dataset):
    """Map-style dataset whose item ``i`` is the whole augmented batch number ``i``.

    With ``n_classes`` every batch also holds ``annotated`` (B, K) bool: the classes each
    sample's case contains (for training with partially annotated cases).
    """

    def __init__(self, source: PatchSource, cases: Sequence[str], settings: SamplerSettings,
                 augment: AugmentSettings | None = None, seed: int = 0,
                 n_classes: int | None = None) -> None:
        if not cases:
            raise ValueError("no training cases to sample from")
        self.opened, self.cases, self.settings = OpenCases(source), list(cases), settings
        self.augment, self.seed, self.n_classes = augment, seed, n_classes
        self.ring: SharedRing | None = None  # set by make_loader for its worker processes
        self.piped = False  # set by make_loader when the ring does not fit in /dev/shm

    def open_all(self) -> None:
        """Open every case now (up to the LRU size), e.g. before workers fork, so they
        inherit the open memmaps instead of each opening them again."""
        for case in self.cases[: self.opened.max_open]:
            self.opened[case]

    def __len__(self) -> int:
        return 2**62  # batches are addressed by index; EpochSampler picks the range

    def __getitem__(self, index: int) -> dict[str, torch.Tensor] | Ticket | Piped:
        rng = np.random.default_rng([self.seed, index])
        picks = rng.integers(len(self.cases), size=self.settings.batch_size)
        image, label = make_batch(self.opened, self.cases, self.settings, rng, picks)
        if self.augment is not None:
            aug_seed = int(rng.integers(2**62))
            augment_batch_(image, label, self.augment, aug_seed)
        batch = {"image": image.contiguous(), "label": label.contiguous()}
        if self.n_classes is not None:
            batch["annotated"] = torch.from_numpy(np.stack([
                annotated_classes(self.opened[self.cases[int(p)]][2], self.n_classes)
                for p in picks]))
        worker = get_worker_info()
        if worker is None:
            return batch
        if self.ring is None:
            return Piped.of(batch) if self.piped else batch
        return self.ring.put(batch, worker.id)


class EpochSampler(Sampler[int]):
    """Yields the batch indices of the current epoch; set ``epoch`` before iterating."""

    def __init__(self, batches_per_epoch: int, epoch: int = 0) -> None:
        self.batches_per_epoch, self.epoch = batches_per_epoch, epoch

    def __iter__(self) -> Iterator[int]:
        start = self.epoch * self.batches_per_epoch
        return iter(range(start, start + self.batches_per_epoch))

    def __len__(self) -> int:
        return self.batches_per_epoch


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def keep_freed_memory() -> None:
    """Have glibc keep freed memory for reuse instead of handing every large block back
    to the OS: otherwise each fresh patch-sized tensor costs a round of page faults
    (augmenting a batch of four 40x56x40 patches: 6.1 -> 4.0 ms). The heap then stays at
    its peak size. Process-wide, so only called in the loader's own worker processes (and
    by the benchmark); a no-op where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)  # glibc's largest allowed value
    libc.mallopt(_M_TRIM_THRESHOLD, 256 * 2**20)


def worker_init(_: int = 0) -> None:
    """DataLoader ``worker_init_fn``: one torch thread, no denormals, freed memory kept,
    pages of the open cases mapped."""
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # see medseg.models.runtime.flush_denormals
    keep_freed_memory()
    info = get_worker_info()
    if info is not None and isinstance(info.dataset, PatchBatches):
        info.dataset.opened.map_pages()


def make_loader(
    batches: PatchBatches, sampler: EpochSampler, num_workers: int = 2, pin_memory: bool = False,
    prefetch_factor: int = 4,
) -> DataLoader:
    """A DataLoader over whole batches (``batch_size=None``) with persistent workers that
    hand batches over through a :class:`SharedRing` (in-process loading when 0 workers),
    or through their pipes when ``/dev/shm`` has no room for the ring."""
    if not num_workers:
        return DataLoader(batches, batch_size=None, sampler=sampler, pin_memory=pin_memory)
    # a worker has at most ~prefetch_factor batches in flight; the ring falls back to
    # ordinary tensor passing in the (unexpected) case that its next buffer is still taken
    batches.ring = make_ring(num_workers, prefetch_factor + 2, batches[0])
    batches.piped = batches.ring is None
    return RingLoader(
        batches, batches.ring, batch_size=None, sampler=sampler, num_workers=num_workers,
        pin_memory=pin_memory, persistent_workers=True, worker_init_fn=worker_init,
        prefetch_factor=prefetch_factor,
    )


def close_loader(loader: object) -> None:
    """Stop a DataLoader's persistent worker processes now (they would otherwise linger
    until the loader is garbage-collected, e.g. at interpreter exit)."""
    iterator = getattr(loader, "_iterator", None)
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
    if iterator is not None:
        loader._iterator = None  # type: ignore[attr-defined]
