"""Checkpoints: atomic round trip, weights-only loading, plan mismatch detection."""

from __future__ import annotations

import pytest
import torch

from medseg.core.errors import CheckpointError
from medseg.models import build_network, load_checkpoint, load_weights, save_checkpoint
from tests.sampling.synthetic import sphere_plan


def payload(plan, net) -> dict:
    return {"plan": plan.to_dict(), "config": "3d", "fold": 0, "model": net.state_dict(),
            "epoch": 3, "best_metric": 0.5}


def test_round_trip_restores_weights(tmp_path) -> None:
    plan = sphere_plan()
    net = build_network(plan, "3d")
    save_checkpoint(tmp_path / "ckpt.pt", payload(plan, net))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary left behind
    ckpt = load_checkpoint(tmp_path / "ckpt.pt", plan, "3d")
    other = build_network(plan, "3d")
    load_weights(other, ckpt)
    for a, b in zip(net.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert ckpt["epoch"] == 3


def test_checkpoint_from_another_plan_is_rejected(tmp_path) -> None:
    plan = sphere_plan()
    save_checkpoint(tmp_path / "ckpt.pt", payload(plan, build_network(plan, "3d")))
    other = plan.with_changes(labels={0: "background", 1: "tumour"})
    with pytest.raises(CheckpointError, match="labels differ"):
        load_checkpoint(tmp_path / "ckpt.pt", other, "3d")
    wider = sphere_plan(filters=(16, 32, 64))
    with pytest.raises(CheckpointError, match="filters"):
        load_checkpoint(tmp_path / "ckpt.pt", wider, "3d")
    with pytest.raises(CheckpointError, match="configuration '3d'"):
        load_checkpoint(tmp_path / "ckpt.pt", plan, "2d")


def test_mismatched_weights_are_a_checkpoint_error(tmp_path) -> None:
    plan = sphere_plan()
    ckpt = payload(plan, build_network(plan, "3d"))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_weights(build_network(sphere_plan(filters=(16, 32, 64)), "3d"), ckpt)


def test_missing_corrupt_and_foreign_files(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a medseg-checkpoint-v1"):
        load_checkpoint(tmp_path / "foreign.pt")


class Arbitrary:
    """A class that weights-only unpickling must refuse to instantiate."""


def test_arbitrary_pickles_are_refused(tmp_path) -> None:
    torch.save({"format": "medseg-checkpoint-v1", "obj": Arbitrary()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "evil.pt")
