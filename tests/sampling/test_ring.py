"""Shared-memory hand-over of batches: tickets, copies out, the fallback when a slot is
full, and the pipe transport when /dev/shm has no room for the ring."""

from __future__ import annotations

import pickle
from multiprocessing.reduction import ForkingPickler

import torch

import medseg.sampling.ring as ring_module
from medseg.sampling.ring import (
    SHM_DIR,
    Piped,
    SharedRing,
    Ticket,
    make_ring,
    ring_bytes,
    ring_fits,
)


def batch(value: float) -> dict[str, torch.Tensor]:
    return {"image": torch.full((2, 1, 4, 5, 3), value),
            "label": torch.full((2, 1, 4, 5, 3), int(value), dtype=torch.uint8)}


def test_put_returns_a_ticket_and_take_copies_the_batch_out() -> None:
    ring = SharedRing(workers=2, size=3, example=batch(0))
    assert all(b.is_shared() for b in ring.buffers.values()) and ring.free.is_shared()
    ticket = ring.put(batch(5), worker=1)
    assert ticket == Ticket(worker=1, slot=0) and not ring.free[1, 0]
    out = ring.take(ticket)
    assert bool(ring.free[1, 0]) and torch.equal(out["image"], batch(5)["image"])
    ring.put(batch(7), worker=1)  # slot 1; the batch taken out earlier is a copy
    assert torch.equal(out["label"], batch(5)["label"])


def test_a_slot_still_taken_is_not_overwritten_the_batch_travels_itself() -> None:
    ring = SharedRing(workers=1, size=2, example=batch(0))
    first, second = ring.put(batch(1), 0), ring.put(batch(2), 0)
    assert isinstance(first, Ticket) and isinstance(second, Ticket)
    third = ring.put(batch(3), 0)  # slot 0 again, not taken out yet
    assert isinstance(third, dict) and torch.equal(third["image"], batch(3)["image"])
    assert torch.equal(ring.take(first)["image"], batch(1)["image"])  # intact
    assert isinstance(ring.put(batch(4), 0), dict)  # slot 1: ``second`` is still out
    assert ring.put(batch(5), 0) == Ticket(0, 0)  # slot 0 was taken out: reused
    assert torch.equal(ring.take(second)["image"], batch(2)["image"])


def test_a_batch_of_another_shape_travels_itself() -> None:
    ring = SharedRing(workers=1, size=2, example=batch(0))
    other = {"image": torch.zeros(1, 1, 4, 5, 3), "label": torch.zeros(1, 1, 4, 5, 3)}
    assert ring.put(other, 0) is other and ring.put({"image": other["image"]}, 0) is not None
    assert bool(ring.free.all())


def test_the_ring_fits_only_within_a_share_of_the_free_shared_memory() -> None:
    example = batch(0.0)  # float32 image of 120 values, uint8 label of 120
    assert ring_bytes(workers=2, size=6, example=example) == 2 * 6 * (120 * 4 + 120)
    assert ring_fits(7200, free=64 * 2**20) and ring_fits(7200, free=None)
    assert not ring_fits(7200, free=7200)  # the ring may take at most half of it


def test_no_room_in_dev_shm_gives_no_ring_and_a_warning(monkeypatch, caplog) -> None:
    monkeypatch.setattr(ring_module, "shm_free_bytes", lambda path=SHM_DIR: 1000)
    with caplog.at_level("WARNING"):
        assert make_ring(2, 6, batch(0.0)) is None
    assert "shared batch ring needs 1 MiB" in caplog.text and "--shm-size" in caplog.text


def test_a_failed_allocation_gives_no_ring(monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise RuntimeError("unable to allocate shared memory(shm) for file </torch_1>")

    monkeypatch.setattr(ring_module.SharedRing, "__init__", fail)
    assert make_ring(2, 6, batch(0.0)) is None


def test_piped_batches_round_trip_through_pickle_without_shared_memory() -> None:
    piped = Piped.of(batch(3))
    back = pickle.loads(ForkingPickler.dumps(piped)).tensors()
    assert not any(value.is_shared() for value in back.values())
    assert torch.equal(back["image"], batch(3)["image"]) and back["label"].dtype == torch.uint8
