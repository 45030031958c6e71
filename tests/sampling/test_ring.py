"""Shared-memory hand-over of batches: tickets, copies out, and the fallback when full."""

from __future__ import annotations

import torch

from medseg.sampling.ring import SharedRing, Ticket


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
