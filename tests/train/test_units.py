"""Pure pieces of training: splits, poly LR, budget fitting, Dice, loss, RNG state."""

from __future__ import annotations

import itertools
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from medseg.core.errors import ConfigError
from medseg.train.budget import PROVISIONAL_EPOCHS, fit_total_epochs
from medseg.train.loss import build_loss, compute_loss
from medseg.train.optim import OptimSettings, build_optimizer, poly_lr
from medseg.train.splits import fold_cases, load_or_create_splits, make_splits
from medseg.train.state import capture_rng, restore_rng
from medseg.train.validation import dice_per_class

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


def test_budget_fit_uses_measured_times() -> None:
    assert fit_total_epochs(600, 0, [], [], 5) == PROVISIONAL_EPOCHS
    # 2 epochs of 10 s done (25 s elapsed incl. setup): (600 - 25) / 10 = 57 more epochs
    assert fit_total_epochs(600, 25, [12, 10], [], 5) == 2 + 57
    # validations of 20 s every 5 epochs add 4 s per epoch and 20 s reserved at the end
    assert fit_total_epochs(600, 25, [12, 10], [20], 5) == 2 + (600 - 25 - 20) // 14
    assert fit_total_epochs(600, 25, [12, 10], [], 5, validation_guess_s=20) == 2 + 555 // 14
    assert fit_total_epochs(60, 70, [35, 35], [], 5) == 2  # over budget: stop now


def test_changing_the_epoch_count_keeps_the_lr_continuous_and_decreasing() -> None:
    from medseg.train.loop import Progress, change_total_epochs, lr_at

    session = SimpleNamespace(sampler=SimpleNamespace(batches_per_epoch=10), initial_lr=1.0)
    progress = Progress(total_epochs=10)
    lrs = []
    for epoch, new_total in enumerate([10, 10, 10, 10, 10, 16, 16, 16, 12, 12, 12, 12]):
        progress.epoch = epoch
        change_total_epochs(session, progress, new_total)  # as fit() does after an epoch
        lrs += [lr_at(session, progress, i) for i in range(10)]
    assert all(b < a for a, b in itertools.pairwise(lrs))  # never jumps back up
    assert max(abs(b - a) for a, b in itertools.pairwise(lrs)) < 0.05  # no cliffs
    # re-anchored at epoch 8 (16 -> 12 epochs): 40 steps from lrs[80] down to zero
    assert lrs[-1] == pytest.approx(poly_lr(lrs[80], 39 / 40))
    assert lr_at(session, progress, 10) == 0.0  # ends at zero with the last epoch


def test_dice_per_class_hand_computed() -> None:
    truth = np.array([0, 1, 1, 1, 2, 2, 0, 0])
    pred = np.array([0, 1, 1, 0, 2, 0, 2, 0])
    d1, d2, d3 = dice_per_class(pred, truth, 4)
    assert d1 == pytest.approx(2 * 2 / (2 + 3)) and d2 == pytest.approx(2 * 1 / (2 + 2))
    assert np.isnan(d3)


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
    sgd = build_optimizer(params, OptimSettings())
    assert sgd.param_groups[0]["nesterov"] and sgd.param_groups[0]["lr"] == 1e-2
    adamw = build_optimizer(params, OptimSettings(name="adamw"))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["lr"] == 1e-3
    with pytest.raises(ValueError, match="adam"):
        build_optimizer(params, OptimSettings(name="adam"))


def test_rng_state_round_trip_is_weights_only_loadable(tmp_path) -> None:
    state = capture_rng()
    torch.save(state, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True))
    torch.testing.assert_close(torch.rand(3), expected[0])
    np.testing.assert_array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]
