"""The reports in a real browser (headless Chromium over the DevTools protocol).

Each test builds a report, copies its folder elsewhere and deletes the original (so any
absolute path would break it), opens the copy from disk with the network closed, and
fails on any console error, uncaught exception or failed resource load. It checks that the
viewer draws a non-blank slice and that choosing another case, another plane or another
slice changes the picture. Skipped only where no Chromium can be found (``.ci/run``
installs the Debian package ``chromium`` when it is missing).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medseg.cli.main import main
from medseg.core import Volume, sidecars
from medseg.core.errors import EXIT_OK
from medseg.inference.uncertainty import CaseUncertainty, write_uncertainty
from medseg.io import write_volume
from medseg.metrics import evaluate_folders
from tests.browser import Browser, find_chromium
from tests.conftest import make_affine, sphere_label
from tests.inference.helpers import tiny_plan, write_run

pytestmark = pytest.mark.skipif(find_chromium() is None,
                                reason="no chromium (.ci/run installs the Debian package)")

CANVAS = """(() => {
  const c = document.getElementById('mv-canvas');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let lit = 0; const seen = new Set();
  for (let i = 0; i < d.length; i += 4) {
    const v = (d[i] << 16) | (d[i + 1] << 8) | d[i + 2];
    if (v) lit++;
    seen.add(v);
  }
  return {lit: lit / (d.length / 4), colours: seen.size, url: c.toDataURL()};
})()"""

CASES = {  # name: (shape, spacing, orientation, oblique degrees)
    "case_a": ((24, 20, 16), (1.0, 1.0, 1.0), "RAS", (0, 0, 0)),
    "case_b": ((20, 22, 12), (1.0, 1.2, 2.0), "LPS", (10, 0, 5)),
    "case_c": ((18, 18, 18), (0.9, 0.9, 0.9), "PIR", (0, 0, 0)),
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser(width=1400, height=1000) as b:
        yield b


def _two_labels(shape: tuple[int, ...], shift: int) -> np.ndarray:
    ball = sphere_label(shape, [s / 2 + shift for s in shape], min(shape) / 3)
    ball[: shape[0] // 2][ball[: shape[0] // 2] > 0] = 2
    return ball


@pytest.fixture(scope="module")
def built_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An evaluation report (images, two labels, uncertainty maps)."""
    tmp_path = tmp_path_factory.mktemp("evaluation")
    pred, gt, img = tmp_path / "pred", tmp_path / "gt", tmp_path / "img"
    rng = np.random.default_rng(0)
    for i, (case, (shape, spacing, orient, oblique)) in enumerate(CASES.items()):
        affine = make_affine(spacing, orient, oblique, origin=(i * 5, -3, 2))
        ref = _two_labels(shape, 0)
        guess = _two_labels(shape, i)  # case_a perfect, the others shifted
        image = ref * 40.0 + rng.normal(100, 10, shape)
        write_volume(Volume.from_spatial(ref, affine), gt / f"{case}.nii.gz")
        write_volume(Volume.from_spatial(guess, affine), pred / f"{case}.nii.gz")
        write_volume(Volume.from_spatial(image.astype(np.float32), affine),
                     img / f"{case}_0000.nii.gz")
        edge = np.abs(np.gradient(guess.astype(np.float32))).sum(0).clip(0, 1)
        score = {"format": sidecars.SCORE_FORMAT, "score": 0.1 * i, "members": 1,
                 "per_label": {}}
        write_uncertainty(pred, case, CaseUncertainty(edge.astype(np.float32), None, score),
                          Volume.from_spatial(guess, affine))
    out = tmp_path / "report"
    result = evaluate_folders(pred, gt, out, labels={1: "left", 2: "right"}, images_dir=img,
                              qc_cases=1, progress=False)
    assert result.complete and set(result.uncertainty) == set(CASES)
    return out


@pytest.fixture
def evaluation_report(built_report: Path, tmp_path: Path) -> Path:
    """A copy of the evaluation report in another place, the original out of reach."""
    original = tmp_path / "report"
    shutil.copytree(built_report, original)
    return _moved(original, tmp_path, built_report.parent)


def _moved(report: Path, tmp_path: Path, *built_in: Path) -> Path:
    """Copy the report folder elsewhere, delete the original, check no absolute paths."""
    copy = tmp_path / "elsewhere" / "copied report"
    shutil.copytree(report, copy)
    shutil.rmtree(report)
    for path in copy.rglob("*"):
        if path.suffix in (".html", ".js", ".css", ".json"):
            text = path.read_text(encoding="utf-8")
            assert not any(str(folder) in text for folder in (tmp_path, *built_in)), path
    return copy / "index.html"


def _state(browser: Browser) -> dict[str, Any]:
    return browser.evaluate("(s => ({case: s.caseId, plane: s.plane, rendered: s.rendered,"
                            " pending: s.pending, error: s.error}))(medsegViewer.state)")


def _wait_drawn(browser: Browser, case: str, after: int) -> dict[str, Any]:
    browser.wait_for(f"(s => s.caseId === {json.dumps(case)} && s.pending === 0 && "
                     f"s.data !== null && s.rendered > {after})(medsegViewer.state)")
    picture = browser.evaluate(CANVAS)
    assert picture["lit"] > 0.2 and picture["colours"] > 30, "blank viewer"
    return picture


def _open(browser: Browser, page: Path) -> dict[str, Any]:
    browser.errors.clear()
    browser.goto(page.as_uri())
    browser.wait_for("window.medsegViewer && medsegViewer.state.rendered > 0 && "
                     "medsegViewer.state.pending === 0")
    return _state(browser)


def test_evaluation_report_viewer_in_chromium(browser, evaluation_report):
    first = _open(browser, evaluation_report)
    assert first["case"] == "case_c" and first["plane"] == "axial"  # worst mean Dice first
    before = _wait_drawn(browser, "case_c", 0)

    browser.click('tr[data-case="case_a"] a')
    after_case = _wait_drawn(browser, "case_a", _state(browser)["rendered"] - 1)
    assert after_case["url"] != before["url"]

    browser.click("#mv-plane-coronal")
    browser.wait_for("medsegViewer.state.plane === 'coronal'")
    coronal = _wait_drawn(browser, "case_a", 0)
    assert coronal["url"] != after_case["url"]

    browser.wheel("#mv-canvas", 120)
    browser.wait_for("document.getElementById('mv-slice').value !== "
                     f"'{browser.evaluate('medsegViewer.state.pos[1] + 1')}'")
    assert browser.evaluate(CANVAS)["url"] != coronal["url"]

    shown = browser.evaluate(CANVAS)["url"]
    browser.click("#mv-unc")  # the uncertainty overlay changes the picture too
    assert browser.evaluate(CANVAS)["url"] != shown
    browser.click("#mv-class-1")  # hiding a class as well
    assert browser.evaluate(CANVAS)["url"] != shown

    header = 'th[data-col="mean_dice"]'
    order = "[...document.querySelectorAll('#case-table tbody tr')].map(r => r.dataset.case)"
    ascending = browser.evaluate(order)
    browser.click(header)
    assert browser.evaluate(order) == ascending[::-1]
    assert browser.errors == []


def test_missing_case_data_is_reported_as_an_error(browser, evaluation_report):
    (evaluation_report.parent / "viewer" / "cases" / "00001.js").unlink()  # case_b
    _open(browser, evaluation_report)
    browser.click('tr[data-case="case_b"] a')
    browser.wait_for("medsegViewer.state.error !== null")
    assert any("00001.js" in e for e in browser.errors)
    browser.errors.clear()


@pytest.fixture
def review_inputs(tmp_path: Path, volume_factory) -> tuple[Path, Path]:
    run = tmp_path / "run"
    write_run(run, tiny_plan(), folds=[0, 1])
    inputs = tmp_path / "inputs"
    for i, orient in enumerate(("RAS", "LPS")):
        volume = volume_factory((12, 10, 9), (1.0, 1.0, 1.5), orient, (0, 8 * i, 0),
                                kind="sphere", seed=i)
        write_volume(volume, inputs / f"scan_{i}.nii.gz")
    return run, inputs


def _predict_report(run: Path, inputs: list[Path], out: Path) -> None:
    args = ["predict", "-m", str(run), "-i", *map(str, inputs), "-o", str(out),
            "--device", "cpu", "--no-progress", "--report"]
    assert main(args) == EXIT_OK


def _ranking(page: Path) -> list[str]:
    html = page.read_text(encoding="utf-8")
    return [part.split('"', 1)[0] for part in html.split('<tr data-case="')[1:]]


def test_prediction_review_report_in_chromium(browser, review_inputs, tmp_path):
    run, inputs = review_inputs
    out = tmp_path / "out"
    files = sorted(inputs.iterdir())
    _predict_report(run, files, out)
    scores = {f.name.split(".")[0]: json.loads(sidecars.uncertainty_score_path(
        out, f.name.split(".")[0]).read_text())["score"] for f in files}
    ranking = _ranking(out / "report" / "index.html")
    assert ranking == sorted(scores, key=lambda c: (-scores[c], c))
    assert all((out / "report" / "qc" / f"{c}.png").is_file() for c in scores)
    # Reordered inputs (outputs exist: the report is rebuilt from them) rank the same.
    _predict_report(run, files[::-1], out)
    assert _ranking(out / "report" / "index.html") == ranking

    page = _moved(out / "report", tmp_path)
    state = _open(browser, page)
    assert state["case"] == ranking[0]
    first = _wait_drawn(browser, ranking[0], 0)
    assert browser.evaluate("document.querySelector('.mv-montage').complete && "
                            "document.querySelector('.mv-montage').naturalWidth > 0")
    browser.click(f'tr[data-case="{ranking[1]}"]')  # a click anywhere on the row
    other = _wait_drawn(browser, ranking[1], _state(browser)["rendered"] - 1)
    assert other["url"] != first["url"]
    browser.click("#mv-plane-sagittal")
    browser.wait_for("medsegViewer.state.plane === 'sagittal'")
    assert browser.evaluate(CANVAS)["url"] != other["url"]
    assert browser.errors == []
