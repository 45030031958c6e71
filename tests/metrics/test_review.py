"""Review report without references: ranking, volumes per label, cases that cannot be shown."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from medseg.core import Volume
from medseg.core.errors import ReadError
from medseg.metrics.review import ReviewCase, label_summary, rank_cases, write_review_report
from medseg.metrics.viewer_data import CaseLayers
from tests.conftest import make_affine, sphere_label

LABELS = {1: "head", 2: "tail"}


def _case(name: str, score: float | None, seed: int = 0) -> ReviewCase:
    affine = make_affine((1.0, 1.0, 2.0), "LPS", (0, 5 * seed, 0))
    labels = sphere_label((14, 12, 8), radius=4)
    labels[:7][labels[:7] > 0] = 2
    image = np.random.default_rng(seed).normal(100, 15, labels.shape).astype(np.float32)

    def load() -> CaseLayers:
        return CaseLayers(Volume.from_spatial(labels, affine), None,
                          Volume.from_spatial(image, affine))

    file = None if score is None else {
        "score": score, "members": 1,
        "per_label": {"1": {"score": score / 2}, "2": {"score": score}}}
    return ReviewCase(name, load, file)


def test_ranking_is_by_score_then_name_whatever_the_input_order():
    cases = [_case("b", 0.3), _case("a", 0.3), _case("c", 0.9), _case("d", None),
             _case("e", 0.1), _case("0", None)]
    expected = ["c", "a", "b", "e", "0", "d"]
    for seed in range(5):
        shuffled = cases[:]
        random.Random(seed).shuffle(shuffled)
        assert [c.name for c in rank_cases(shuffled)] == expected


def test_label_summary_gives_volumes_and_label_scores():
    labels = np.zeros((10, 10, 10), dtype=np.uint8)
    labels[:2] = 1  # 200 voxels of 2 x 1 x 0.5 mm = 0.2 mL
    volume = Volume.from_spatial(labels, make_affine((2.0, 1.0, 0.5)))
    summary = label_summary(volume, LABELS, {"per_label": {"1": {"score": 0.25}}})
    assert summary[1] == {"pred_volume_ml": pytest.approx(0.2), "uncertainty": 0.25}
    assert summary[2] == {"pred_volume_ml": 0.0}


def test_report_lists_cases_in_rank_order_and_those_it_cannot_show(tmp_path: Path):
    def broken() -> CaseLayers:
        raise ReadError("cannot read this scan", tmp_path / "scan.nii.gz")

    cases = [_case("low", 0.1, 1), _case("high", 0.8, 2), ReviewCase("broken", broken, None)]
    report = write_review_report(tmp_path / "report", cases, LABELS, model="tiny",
                                 not_predicted={"gone": "no such file"}, progress=False)
    assert report.ranking == ("high", "low") and set(report.failed) == {"broken"}
    html = report.index.read_text()
    assert html.index('data-case="high"') < html.index('data-case="low"')
    assert "cannot read this scan" in html and "no such file" in html
    for name in ("high", "low"):
        assert (tmp_path / "report" / "qc" / f"{name}.png").stat().st_size > 1000
    assert len(list((tmp_path / "report" / "viewer" / "cases").iterdir())) == 2
