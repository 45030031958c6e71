"""Dice + CE: equal to MONAI's with full annotation; partial annotation leaves the classes a
case does not annotate out of that case's loss."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DeepSupervisionLoss
from monai.losses import DiceCELoss as MonaiDiceCE

from medseg.train.loss import DiceCELoss, build_loss, compute_loss


def _batch(seed: int = 0, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, classes, 6, 7, 5, generator=g) * 3
    target = torch.randint(0, classes, (3, 1, 6, 7, 5), generator=g)
    return logits, target


def _monai() -> MonaiDiceCE:
    return MonaiDiceCE(include_background=False, to_onehot_y=True, softmax=True, batch=True,
                       smooth_nr=1e-5, smooth_dr=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_annotation_equals_monai(seed: int) -> None:
    logits, target = _batch(seed)
    ours = DiceCELoss()(logits, target)
    torch.testing.assert_close(ours, _monai()(logits, target), rtol=1e-5, atol=1e-6)
    everything = torch.ones(3, 4, dtype=torch.bool)
    torch.testing.assert_close(DiceCELoss()(logits, target, everything), ours)


def test_deep_supervision_equals_monai() -> None:
    logits, target = _batch(3)
    heads = torch.stack([logits, logits * 0.5, -logits], dim=1)  # (B, heads, K, ...)
    ours = compute_loss(build_loss(deep_supervision=True), heads, target)
    reference = DeepSupervisionLoss(_monai(), weight_mode="exp")(list(heads.unbind(1)), target)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def _without_class(target: torch.Tensor, sample: int, k: int) -> torch.Tensor:
    target = target.clone()
    target[sample][target[sample] == k] = 0  # case `sample` has no class k contoured
    return target


def test_unannotated_class_costs_nothing_where_the_case_lacks_it() -> None:
    logits, target = _batch(4)
    target = _without_class(target, sample=1, k=2)
    annotated = torch.ones(3, 4, dtype=torch.bool)
    annotated[1, 2] = False
    # predicting class 2 instead of background in sample 1: swap the two logits there
    swapped = logits.clone()
    swapped[1, [0, 2]] = logits[1, [2, 0]]
    loss = DiceCELoss()
    torch.testing.assert_close(loss(swapped, target, annotated), loss(logits, target, annotated))
    # with full annotation the same swap is penalised
    assert not torch.allclose(loss(swapped, target), loss(logits, target))


def test_unannotated_sample_is_left_out_of_the_class_dice() -> None:
    logits, target = _batch(5, classes=2)
    target = _without_class(target, sample=2, k=1)
    annotated = torch.tensor([[True, True], [True, True], [True, False]])
    partial = DiceCELoss()(logits, target, annotated)
    # reference: Dice of class 1 over samples 0 and 1 only, CE where background voxels of
    # sample 2 are certain (its two classes merge into one)
    dice = _monai().dice(logits[:2], target[:2])
    log_p = torch.log_softmax(logits, 1)
    ce = -log_p.gather(1, target).squeeze(1)
    ce[2] = 0.0  # merged probability of {background, class 1} is 1 in sample 2
    torch.testing.assert_close(partial, dice + ce.mean(), rtol=1e-5, atol=1e-6)


def test_no_annotated_foreground_leaves_only_cross_entropy() -> None:
    logits, target = _batch(6, classes=3)
    target.zero_()
    annotated = torch.tensor([[True, False, False]] * 3)
    assert DiceCELoss()(logits, target, annotated).item() == pytest.approx(0.0, abs=1e-6)
