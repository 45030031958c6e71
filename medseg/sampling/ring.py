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
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Ticket:
    """Where a worker left a batch: buffer ``slot`` of worker ``worker``."""

    worker: int
    slot: int


class SharedRing:
    """``size`` shared-memory batch buffers per worker, shaped like ``example``."""

    def __init__(self, workers: int, size: int, example: Mapping[str, torch.Tensor]) -> None:
        self.workers, self.size = workers, size
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


class RingLoader(DataLoader):
    """DataLoader whose dataset hands batches over through ``ring``: tickets are turned
    back into batches (copies, valid however long they are kept) as they are yielded."""

    def __init__(self, dataset: Any, ring: SharedRing, **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.ring = ring
        self.fallbacks = 0  # batches that came the ordinary way (their buffer was taken)

    def __iter__(self) -> Iterator[Batch]:
        for item in super().__iter__():
            if isinstance(item, Ticket):
                yield self.ring.take(item, self.pin_memory)
            else:
                self.fallbacks += 1
                yield item
