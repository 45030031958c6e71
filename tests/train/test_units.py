"""Pure pieces of training: splits, poly LR, budget fitting, Dice, loss, RNG state."""

from __future__ import annotations

import itertools
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from medseg.core.errors import ConfigError
from medseg.train.budget import (
    MARGIN_FRACTION,
    MARGIN_S,
    RESERVE_FACTOR,
    VALIDATION_SHARE,
    Timings,
    may_step,
    reserve_s,
    schedule_fraction,
    training_window_s,
)
from medseg.train.loss import build_loss, compute_loss
from medseg.train.optim import build_optimizer, poly_lr
from medseg.train.splits import fold_cases, load_or_create_splits, make_splits
from medseg.train.state import capture_rng, restore_rng
from medseg.train.validation import dice_per_class, validate
from tests.inference.helpers import threshold_network

CASES = [f"case_{i:02d}" for i in range(23)]


def test_splits_partition_the_cases_and_are_seeded() -> None:
    splits = make_splits(CASES, n_folds=5, seed=1)
    vals = [c for s in splits for c in s["val"]]
    assert sorted(vals) == CASES  # every case validated exactly once
    for s in splits:
        assert set(s["train"]).isdisjoint(s["val"]) and len(s["train"]) + len(s["val"]) == 23
    assert make_splits(CASES, 5, seed=1) == splits and make_splits(CASES, 5, seed=2) != splits


def test_splits_are_written_once(tmp_path) -> None:
    first = load_or_create_splits(tmp_path, CASES, seed=1)
    again = load_or_create_splits(tmp_path, CASES, seed=999)  # the file wins over the seed
    assert again == first and (tmp_path / "splits.json").is_file()
    with pytest.raises(ConfigError, match="not in the cache"):
        load_or_create_splits(tmp_path, CASES[:10])


def test_fold_selection() -> None:
    splits = make_splits(CASES, 5)
    train, val = fold_cases(splits, 2, CASES)
    assert val == splits[2]["val"] and train == splits[2]["train"]
    assert fold_cases(splits, "all", CASES) == (sorted(CASES), [])
    with pytest.raises(ConfigError, match="fold 5"):
        fold_cases(splits, 5, CASES)


def test_poly_lr_values() -> None:
    assert poly_lr(0.01, 0.0) == 0.01
    assert poly_lr(0.01, 1.0) == 0.0
    assert poly_lr(0.01, 0.5) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 1.5) == 0.0


def test_budget_reserves_the_final_validation_and_checkpoint() -> None:
    measured = Timings(step_seconds=0.5, validation_seconds=[20.0, 30.0], save_seconds=[2.0])
    reserve = RESERVE_FACTOR * (30.0 + 2.0) + MARGIN_FRACTION * 600 + MARGIN_S  # slowest
    assert reserve_s(600, measured, validates=True) == pytest.approx(reserve)
    assert training_window_s(600, measured, validates=True) == pytest.approx(600 - reserve)
    # without validation cases nothing is reserved for validating
    no_val = training_window_s(600, measured, validates=False)
    assert no_val == pytest.approx(600 - RESERVE_FACTOR * 2.0 - MARGIN_FRACTION * 600 - MARGIN_S)
    # before the first validation the guess stands in
    guess = Timings(step_seconds=0.5, validation_guess_s=25.0)
    assert reserve_s(600, guess, True) == pytest.approx(
        RESERVE_FACTOR * (25.0 + 2.0) + MARGIN_FRACTION * 600 + MARGIN_S)  # save guess 2 s
    assert training_window_s(10, Timings(save_guess_s=60.0), True) == 0.0  # never < 0
    # a slow validation is reserved no more than its share of the budget (cases that would
    # end past the budget are skipped): a long one does not eat the training time
    slow = Timings(step_seconds=0.5, validation_guess_s=300.0)
    assert reserve_s(1800, slow, True) == pytest.approx(
        RESERVE_FACTOR * (VALIDATION_SHARE * 1800 + 2.0) + MARGIN_FRACTION * 1800 + MARGIN_S)
    quick = Timings(step_seconds=0.5, validation_guess_s=30.0)  # under the cap: all of it
    assert reserve_s(1800, quick, True) == pytest.approx(
        RESERVE_FACTOR * (30.0 + 2.0) + MARGIN_FRACTION * 1800 + MARGIN_S)


def test_a_step_is_taken_only_if_it_ends_in_the_window() -> None:
    assert may_step(99.0, 100.0, 1.0)
    assert not may_step(99.5, 100.0, 1.0)
    assert may_step(0.0, 100.0, None)  # the first step is always tried
    assert schedule_fraction(50, 100) == 0.5 and schedule_fraction(150, 100) == 1.0
    assert schedule_fraction(5, 0) == 1.0


def test_budgeted_lr_follows_the_elapsed_fraction_and_reaches_zero() -> None:
    from medseg.train.loop import Progress, lr_at

    session = SimpleNamespace(sampler=SimpleNamespace(batches_per_epoch=10), initial_lr=1.0,
                              val_cases=[], source=None, config={}, model=torch.nn.Linear(1, 1),
                              save_guess_s=None)
    progress = Progress(total_epochs=1, budget_s=100.0, step_seconds=0.1)
    save_guess = 1.0 + 3 * 4 * 2 / 100e6  # checkpoint of a 2-parameter model
    window = training_window_s(100.0, Timings(step_seconds=0.1, save_guess_s=save_guess),
                               validates=False)
    lrs = []
    for elapsed in np.linspace(0, 100, 41):
        progress.elapsed_s = float(elapsed)
        lrs.append(lr_at(session, progress, 0))
    assert lrs[0] == 1.0 and all(b <= a for a, b in itertools.pairwise(lrs))
    assert lrs[-1] == 0.0
    progress.elapsed_s = window / 2
    assert lr_at(session, progress, 0) == pytest.approx(poly_lr(1.0, 0.5))


def test_epoch_lr_is_a_function_of_the_step() -> None:
    from medseg.train.loop import Progress, lr_at

    session = SimpleNamespace(sampler=SimpleNamespace(batches_per_epoch=10), initial_lr=1.0)
    progress = Progress(total_epochs=4, epoch=2)
    assert lr_at(session, progress, 5) == pytest.approx(poly_lr(1.0, 25 / 40))


def test_dice_per_class_hand_computed() -> None:
    truth = np.array([0, 1, 1, 1, 2, 2, 0, 0])
    pred = np.array([0, 1, 1, 0, 2, 0, 2, 0])
    d1, d2, d3 = dice_per_class(pred, truth, 4)
    assert d1 == pytest.approx(2 * 2 / (2 + 3)) and d2 == pytest.approx(2 * 1 / (2 + 2))
    assert d3 == 1.0  # absent from both: nothing missed (as in evaluation)
    no_two = np.where(truth == 2, 0, truth)
    assert dice_per_class(pred, no_two, 4)[1] == 0.0  # predicted but not in the reference
    assert np.isnan(dice_per_class(pred, no_two, 4, partial_labels=True)[1])  # not annotated


class _Cases:
    """An in-memory patch source: image (1, X, Y, Z) and label (1, X, Y, Z) per case."""

    def __init__(self, cases: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        self.cases = cases

    def image(self, case: str, mmap: bool = True) -> np.ndarray:
        return self.cases[case][0]

    def label(self, case: str, mmap: bool = True) -> np.ndarray:
        return self.cases[case][1]


def test_validation_scores_the_largest_component_alongside() -> None:
    ball = np.zeros((16, 16, 16), dtype=bool)
    ball[6:12, 6:12, 6:12] = True  # 216 voxels
    island = np.zeros_like(ball)
    island[0:2, 0:2, 0:3] = True  # 12 voxels, predicted too (bright)
    image = np.where(ball | island, 3.0, 0.0).astype(np.float32)[None]
    source = _Cases({
        "spurious": (image, ball.astype(np.uint8)[None]),  # the island is a false positive
        "real": (image, (ball | island).astype(np.uint8)[None]),  # the island is anatomy
    })
    result = validate(threshold_network(), source, ["spurious", "real"],
                      {"patch_size": [8, 8, 8]}, 2, torch.device("cpu"))
    partial = 2 * 216 / (2 * 216 + 12)  # Dice with the island on one side only
    assert result.case_dice["spurious"] == [pytest.approx(partial)]
    assert result.component_case_dice["spurious"] == [pytest.approx(1.0)]
    assert result.case_dice["real"] == [pytest.approx(1.0)]
    assert result.component_case_dice["real"] == [pytest.approx(partial)]
    evidence = result.component_evidence()
    assert evidence.cases == (2,) and evidence.dice == pytest.approx(evidence.dice_largest)
    assert evidence.improved() == ()  # a tie: the prediction is left as it is


def test_loss_handles_deep_supervision_and_ignores_background_in_dice() -> None:
    target = torch.zeros(2, 1, 8, 8, 8, dtype=torch.long)
    target[:, :, 2:6, 2:6, 2:6] = 1
    perfect = torch.nn.functional.one_hot(target[:, 0], 2).movedim(-1, 1).float() * 20 - 10
    plain = build_loss(deep_supervision=False)
    assert compute_loss(plain, perfect, target) < 0.01
    stacked = torch.stack([perfect, perfect, -perfect], dim=1)  # (B, heads, K, ...)
    ds = compute_loss(build_loss(deep_supervision=True), stacked, target)
    assert 0.1 < ds < compute_loss(plain, -perfect, target)  # the bad head weighs least


def test_optimizers() -> None:
    params = [torch.nn.Parameter(torch.zeros(3))]
    sgd = build_optimizer(params, "sgd", 1e-2)
    assert sgd.param_groups[0]["nesterov"] and sgd.param_groups[0]["lr"] == 1e-2
    assert sgd.param_groups[0]["weight_decay"] == 3e-5
    adamw = build_optimizer(params, "adamw", 2e-3)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["lr"] == 2e-3
    with pytest.raises(ValueError, match="adam"):
        build_optimizer(params, "adam", 1e-3)


def test_rng_state_round_trip_is_weights_only_loadable(tmp_path) -> None:
    state = capture_rng()
    torch.save(state, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True))
    torch.testing.assert_close(torch.rand(3), expected[0])
    np.testing.assert_array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def test_auto_fold_validates_only_when_there_are_enough_cases() -> None:
    from medseg.train.settings import MIN_CASES_TO_VALIDATE, resolve_fold

    assert resolve_fold("auto", MIN_CASES_TO_VALIDATE) == 0
    assert resolve_fold("auto", MIN_CASES_TO_VALIDATE - 1) == "all"  # e.g. 3 BraTS cases
    assert resolve_fold(3, 4) == 3 and resolve_fold("all", 100) == "all"


@pytest.mark.parametrize("slice_axis", [None, 0, 2])
def test_augmentation_never_mirrors_an_axis_the_plan_leaves_out(slice_axis) -> None:
    from dataclasses import replace

    from medseg.preprocess.planning import plan_configuration
    from medseg.sampling.augment import augment_batch
    from medseg.train.api import augmentation
    from medseg.train.settings import TrainSettings

    spacing, shape = [1.0, 1.0, 1.0], [32, 32, 32]
    if slice_axis is not None:
        del spacing[slice_axis], shape[slice_axis]
    config = plan_configuration(spacing, shape, 1e8, 8.0, slice_axis=slice_axis)
    config = replace(config, training=replace(config.training, mirror_axes=(1, 2)))
    settings = replace(augmentation(config, TrainSettings()), p_rotate=0, p_scale=0,
                       p_brightness=0, p_contrast=0, p_gamma=0, p_noise=0, p_blur=0)
    # patch axes of the RAS volume: (0, 1, 2) in 3D, the in-plane ones in 2D
    ras_axes = [a for a in range(3) if a != slice_axis]
    image = torch.zeros(64, 1, *[4] * len(ras_axes))
    for dim, axis in enumerate(ras_axes):  # a ramp along each axis, distinct weights
        ramp = torch.arange(4.0).reshape([4 if d == dim else 1 for d in range(len(ras_axes))])
        image += 10.0 ** axis * ramp
    label = torch.zeros_like(image, dtype=torch.int64)
    out, _ = augment_batch(image, label, settings, seed=0)
    for dim, axis in enumerate(ras_axes):
        first = out.narrow(2 + dim, 0, 1) - out.narrow(2 + dim, 1, 1)  # >0 where flipped
        flipped = (first.flatten(1) > 0).all(dim=1)
        assert flipped.any() == (axis != 0), (axis, flipped)
