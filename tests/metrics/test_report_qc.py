"""Summary statistics, CSV, text table, box plots and QC montage geometry."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from medseg.core import Volume
from medseg.metrics.evaluate import METRICS, evaluate_case
from medseg.metrics.qc import VIEWS, central_slices, qc_montage, worst_cases
from medseg.metrics.report import (
    box_plot,
    format_summary,
    summarize,
    write_box_plots,
    write_per_case_csv,
)
from tests.conftest import make_affine

LABELS = {1: "Anterior", 2: "Posterior"}


def _metrics(dice: float, hd: float, pred_ml: float = 1.0, ref_ml: float = 1.0) -> dict:
    m = dict.fromkeys(METRICS, 0.5)
    return {**m, "dice": dice, "hd95_mm": hd, "pred_volume_ml": pred_ml, "ref_volume_ml": ref_ml}


PER_CASE = {
    "a": {1: _metrics(0.8, 1.0), 2: _metrics(0.6, 3.0)},
    "b": {1: _metrics(0.4, 2.0), 2: _metrics(0.0, math.nan, pred_ml=0.0)},
    "c": {1: _metrics(1.0, 0.0, 0.0, 0.0), 2: _metrics(0.9, 4.0)},
}


def test_summary_statistics_and_empty_counts():
    summary = summarize(PER_CASE, LABELS, nsd_tolerance_mm=2.0)
    ant, post = summary["per_class"]["Anterior"], summary["per_class"]["Posterior"]
    assert ant["dice"] == pytest.approx(
        {"mean": 2.2 / 3, "median": 0.8, "std": float(np.std([0.8, 0.4, 1.0])), "n": 3,
         "n_nan": 0})
    assert post["hd95_mm"] == pytest.approx(
        {"mean": 3.5, "median": 3.5, "std": 0.5, "n": 2, "n_nan": 1})
    assert (ant["n_both_empty"], ant["n_one_empty"]) == (1, 0)
    assert (post["n_one_empty"], post["n_missed"], post["n_spurious"]) == (1, 1, 0)
    # overall: each case's mean over classes (NaN classes left out), then over cases
    assert summary["overall"]["dice"]["mean"] == pytest.approx(np.mean([0.7, 0.2, 0.95]))
    assert summary["overall"]["hd95_mm"]["mean"] == pytest.approx(np.mean([2.0, 2.0, 2.0]))
    assert summary["n_cases"] == 3 and summary["labels"] == {"1": "Anterior", "2": "Posterior"}
    table = format_summary(summary)
    assert "Anterior" in table and "overall" in table and "0.733 ± " in table


def test_per_case_csv_has_one_row_per_case_and_label(tmp_path):
    path = tmp_path / "per_case.csv"
    write_per_case_csv(path, PER_CASE, LABELS)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 6
    assert rows[3]["case"] == "b" and rows[3]["name"] == "Posterior"
    assert math.isnan(float(rows[3]["hd95_mm"])) and float(rows[3]["dice"]) == 0.0


def test_box_plots_are_png_files(tmp_path):
    paths = write_box_plots(tmp_path, PER_CASE, LABELS, metrics=("dice", "hd95_mm"))
    for path in paths.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ticks = [t.get_text() for t in box_plot(PER_CASE, LABELS, "hd95_mm").axes[0].get_xticklabels()]
    assert ticks == ["Anterior\nn=3", "Posterior\nn=2, 1 NaN"]


def test_worst_cases_by_mean_dice():
    assert worst_cases(PER_CASE, 2) == ["b", "a"]


def _box_labels(shape=(8, 10, 6)) -> np.ndarray:
    arr = np.zeros(shape, np.uint8)
    arr[2:6, 3:7, 1:4] = 1
    return arr


def _contour_extent(ax) -> tuple[float, float, float, float]:
    segs = [s for cs in ax.collections for level in cs.allsegs for s in level]
    pts = np.concatenate(segs)
    return (pts[:, 0].min(), pts[:, 0].max(), pts[:, 1].min(), pts[:, 1].max())


# Label box i 2..5, j 3..6, k 1..3 at spacing (2, 1, 3) mm: the 0.5 outline runs half a voxel
# outside the voxel centres, e.g. i from 1.5 * 2 = 3 mm to 5.5 * 2 = 11 mm.
EXPECTED_MM = {"axial": (3, 11, 2.5, 6.5), "coronal": (3, 11, 1.5, 10.5),
               "sagittal": (2.5, 6.5, 1.5, 10.5)}


@pytest.mark.parametrize("orientation", ["RAS", "LPS"])
def test_qc_outlines_sit_on_the_structure_in_millimetres(orientation):
    ras = _box_labels()
    # Store the same world content in the requested orientation.
    arr = ras if orientation == "RAS" else ras[::-1, ::-1].copy()
    origin = (0, 0, 0) if orientation == "RAS" else (14.0, 9.0, 0)
    ref = Volume.from_spatial(arr, make_affine((2.0, 1.0, 3.0), orientation, origin=origin))
    metrics = evaluate_case(ref, ref)
    fig = qc_montage(ref, ref, {1: "box"}, metrics, title="box")
    axes = fig.axes[: len(VIEWS)]
    assert central_slices(ras == 1) == (4, 5, 2)
    for ax, view in zip(axes, VIEWS, strict=True):
        assert _contour_extent(ax) == pytest.approx(EXPECTED_MM[view], abs=1e-6)
        assert ax.get_aspect() == 1.0  # millimetre axes: the voxel aspect follows the spacing
    assert axes[0].get_xlim()[0] > axes[0].get_xlim()[1]  # radiological: R on the left


def test_qc_montage_draws_on_an_image_from_another_grid():
    ref = Volume.from_spatial(_box_labels(), make_affine((2.0, 1.0, 3.0)))
    pred = ref.with_array(np.roll(ref.array, 1, axis=1))
    image = Volume.from_spatial(np.random.default_rng(0).normal(size=(16, 10, 6)),
                                make_affine((1.0, 1.0, 3.0)))
    metrics = evaluate_case(pred, ref)
    fig = qc_montage(ref, pred, {1: "box"}, metrics, image=image)
    assert len(fig.axes[0].images) == 1
    assert len(fig.axes[0].collections) == 2  # reference and prediction outlines
