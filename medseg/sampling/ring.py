"""Handing batches from DataLoader workers to the main process through reused shared memory.

A tensor returned by a worker is otherwise moved into a fresh shared-memory segment for
every batch, and its file descriptor is passed over a socket to the main process: for a
batch of four 40x56x40 patches that costs more than cutting the batch. Instead the main
process allocates, before the workers start, ``size`` buffers per worker in shared memory
(inherited by forked workers, or sent once when they are spawned). A worker copies each
batch into its next buffer and returns a :class:`Ticket` naming it; the main process copies
the batch out and marks the buffer free again. A worker whose next buffer is still taken
(never expected with ``size`` above the batches in flight) returns the batch itself, the
slower way, so nothing is overwritten and nothing waits.

The buffers live in ``/dev/shm`` (PyTorch's shared memory), which containers often keep
small (Docker's default is 64 MB). :func:`ring_fits` checks the space before the ring is
made; where it does not fit (or allocating it fails), :func:`make_ring` returns None and
the workers send each batch as a :class:`Piped` batch of plain arrays through their result
pipe instead, which needs no shared memory at all (a tensor returned the ordinary way
would need its own ``/dev/shm`` segment for every batch).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

Batch = dict[str, torch.Tensor]

log = logging.getLogger(__name__)

#: Where PyTorch's shared-memory segments live on Linux.
SHM_DIR = "/dev/shm"
#: Share of the free space of ``SHM_DIR`` the ring may take (room for everything else).
SHM_SHARE = 0.5


@dataclass(frozen=True)
class Ticket:
    """Where a worker left a batch: buffer ``slot`` of worker ``worker``."""

    worker: int
    slot: int


class SharedRing:
    """``size`` shared-memory batch buffers per worker, shaped like ``example``."""

    def __init__(self, workers: int, size: int, example: Mapping[str, torch.Tensor]) -> None:
        self.workers, self.size = workers, size
        self.nbytes = ring_bytes(workers, size, example)
        self.buffers = {key: torch.empty((workers, size, *value.shape), dtype=value.dtype)
                        .share_memory_() for key, value in example.items()}
        self.free = torch.ones(workers, size, dtype=torch.bool).share_memory_()
        self._served = 0  # batches put by this process (each worker has its own count)

    def fits(self, batch: Mapping[str, torch.Tensor]) -> bool:
        """Whether ``batch`` has the keys, shapes and dtypes of the buffers."""
        return batch.keys() == self.buffers.keys() and all(
            value.shape == self.buffers[key].shape[2:] and value.dtype == self.buffers[key].dtype
            for key, value in batch.items())

    def put(self, batch: Batch, worker: int) -> Ticket | Batch:
        """Copy ``batch`` into ``worker``'s next buffer and return its ticket; return the
        batch itself if that buffer has not been taken out yet or the batch does not fit."""
        slot = self._served % self.size
        self._served += 1
        if not (bool(self.free[worker, slot]) and self.fits(batch)):
            return batch
        self.free[worker, slot] = False
        for key, value in batch.items():
            self.buffers[key][worker, slot].copy_(value)
        return Ticket(worker, slot)

    def take(self, ticket: Ticket, pin_memory: bool = False) -> Batch:
        """Copy the batch of ``ticket`` out (into pinned memory if asked) and free its buffer."""
        batch = {key: buffer[ticket.worker, ticket.slot] for key, buffer in self.buffers.items()}
        batch = {key: value.pin_memory() if pin_memory else value.clone()
                 for key, value in batch.items()}
        self.free[ticket.worker, ticket.slot] = True
        return batch


@dataclass(frozen=True)
class Piped:
    """A batch sent as plain arrays through the worker's result pipe (pickled bytes, no
    shared memory): the transport when the ring does not fit in ``/dev/shm``."""

    arrays: dict[str, np.ndarray]

    @classmethod
    def of(cls, batch: Mapping[str, torch.Tensor]) -> Piped:
        return cls({key: value.numpy() for key, value in batch.items()})

    def tensors(self) -> Batch:
        return {key: torch.from_numpy(value) for key, value in self.arrays.items()}


def ring_bytes(workers: int, size: int, example: Mapping[str, torch.Tensor]) -> int:
    """Shared memory taken by ``size`` buffers per worker shaped like ``example``."""
    per_batch = sum(value.element_size() * value.numel() for value in example.values())
    return workers * size * per_batch


def shm_free_bytes(path: str = SHM_DIR) -> int | None:
    """Free bytes of the shared-memory file system (None where there is no such folder)."""
    try:
        stat = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return stat.f_bavail * stat.f_frsize


def ring_fits(nbytes: int, free: int | None) -> bool:
    """Whether a ring of ``nbytes`` may take shared memory with ``free`` bytes left
    (at most :data:`SHM_SHARE` of it; unknown free space: try)."""
    return free is None or nbytes <= SHM_SHARE * free


def make_ring(workers: int, size: int, example: Mapping[str, torch.Tensor]
              ) -> SharedRing | None:
    """A :class:`SharedRing`, or None (with one warning) when ``/dev/shm`` has no room for
    it or allocating it fails; the caller then sends :class:`Piped` batches."""
    nbytes, free = ring_bytes(workers, size, example), shm_free_bytes()
    if ring_fits(nbytes, free):
        try:
            return SharedRing(workers, size, example)
        except (RuntimeError, OSError) as exc:  # e.g. "unable to allocate shared memory"
            reason = f"allocating it failed ({exc})"
    else:
        reason = f"{SHM_DIR} has {_mib(free)} free"
    log.warning("data loader: the shared batch ring needs %s but %s; batches go through "
                "the worker pipes instead (slower). In Docker, raise --shm-size.",
                _mib(nbytes), reason)
    return None


def _mib(nbytes: int | None) -> str:
    return "?" if nbytes is None else f"{math.ceil(nbytes / 2**20)} MiB"


class RingLoader(DataLoader):
    """DataLoader whose dataset hands batches over through ``ring``: tickets are turned
    back into batches (copies, valid however long they are kept) as they are yielded.
    Without a ring (``ring=None``) the workers send :class:`Piped` batches."""

    def __init__(self, dataset: Any, ring: SharedRing | None, **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.ring = ring
        self.fallbacks = 0  # batches that did not come through the ring

    @property
    def transport(self) -> str:
        """``"ring"`` (shared memory) or ``"pipe"`` (no room in ``/dev/shm``)."""
        return "pipe" if self.ring is None else "ring"

    def __iter__(self) -> Iterator[Batch]:
        for item in super().__iter__():
            if isinstance(item, Ticket):
                assert self.ring is not None
                yield self.ring.take(item, self.pin_memory)
                continue
            self.fallbacks += 1
            if isinstance(item, Piped):
                batch = item.tensors()
                yield {k: v.pin_memory() for k, v in batch.items()} if self.pin_memory else batch
            else:
                yield item
