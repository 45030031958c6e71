"""evaluate_folders and `medseg evaluate`: synthetic folders, then real hippocampus labels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from medseg.cli.main import main
from medseg.core import Volume
from medseg.core.errors import EXIT_OK, EXIT_PARTIAL, OutputError
from medseg.io import read_volume, write_volume
from medseg.metrics import evaluate_folders
from tests.conftest import HIPPOCAMPUS, make_affine, requires_shared, sphere_label

AFFINE = make_affine((1.0, 1.2, 2.0), "LPS")


def _write(folder: Path, name: str, arr: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    write_volume(Volume.from_spatial(arr.astype(np.uint8), affine), folder / name)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    ball = sphere_label((16, 14, 10), radius=4)
    two = ball.copy()
    two[:8][two[:8] > 0] = 2
    _write(gt, "case_a.nii.gz", two)
    _write(pred, "case_a.nii.gz", two)  # perfect
    _write(gt, "case_b.nii.gz", two)
    _write(pred, "case_b.nii.gz", np.where(two == 2, 0, two))  # label 2 missed
    _write(gt, "case_c.nii.gz", two)
    _write(pred, "case_c.nii.gz", two, make_affine((1.0, 1.0, 1.0), "LPS"))  # other grid
    _write(gt, "case_d.nii.gz", two)  # no prediction
    return pred, gt


def test_evaluate_folders_writes_the_report_and_records_problems(folders, tmp_path):
    pred, gt = folders
    out = tmp_path / "report"
    result = evaluate_folders(pred, gt, out, progress=False, qc_cases=1)
    assert result.labels == {1: "label_1", 2: "label_2"}
    assert sorted(result.per_case) == ["case_a", "case_b"]
    assert "case_c" in result.failed and "--resample-pred" in result.failed["case_c"]
    assert result.missing_predictions == ("case_d",) and not result.complete
    summary = json.loads((out / "summary.json").read_text())
    assert summary["per_class"]["label_2"]["n_missed"] == 1
    assert summary["per_class"]["label_2"]["hd95_mm"]["n_nan"] == 1
    assert summary["missing_predictions"] == ["case_d"]
    assert len(list(csv.DictReader((out / "per_case.csv").open()))) == 4
    assert (out / "qc" / "case_b.png").is_file() and not (out / "qc" / "case_a.png").exists()
    page = (out / "index.html").read_text()
    assert "qc/case_b.png" in page and "plots/box_dice.png" in page and "case_d" in page


def test_parallel_workers_and_resampling_give_every_case(folders, tmp_path):
    pred, gt = folders
    result = evaluate_folders(pred, gt, tmp_path / "r", labels={1: "A", 2: "B"}, workers=2,
                              resample_pred=True, progress=False, qc_cases=0)
    assert sorted(result.per_case) == ["case_a", "case_b", "case_c"]
    assert result.per_case["case_a"][2]["dice"] == 1.0
    assert 0.0 < result.per_case["case_c"][1]["dice"] < 1.0  # resampled onto the LPS grid


def test_report_folder_inside_an_input_is_refused(folders):
    pred, gt = folders
    with pytest.raises(OutputError, match="inside the input"):
        evaluate_folders(pred, gt, gt / "report", progress=False)


@requires_shared
@pytest.mark.slow
def test_cli_on_real_hippocampus_labels_against_eroded_copies(tmp_path, capsys):
    gt, pred, out = tmp_path / "gt", tmp_path / "pred", tmp_path / "report"
    gt.mkdir()
    for path in sorted((HIPPOCAMPUS / "labelsTr").glob("*.nii.gz"))[:5]:
        (gt / path.name).write_bytes(path.read_bytes())
        ref = read_volume(path)
        eroded = np.zeros_like(ref.array[0])
        for value in (1, 2):
            eroded[ndimage.binary_erosion(ref.array[0] == value)] = value
        write_volume(ref.with_array(eroded), pred / path.name)
    code = main(["evaluate", str(pred), str(gt), "-o", str(out), "--labels",
                 "1:Anterior,2:Posterior", "--images", str(HIPPOCAMPUS / "imagesTr"),
                 "--workers", "2", "--qc-cases", "2"])
    assert code == EXIT_OK
    assert "Anterior" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    for name in ("Anterior", "Posterior"):
        stats = summary["per_class"][name]
        assert 0.2 < stats["dice"]["mean"] < 0.95 and stats["precision"]["mean"] == 1.0
        assert stats["hd95_mm"]["n"] == 5 and stats["hd95_mm"]["mean"] >= 1.0
    rows = list(csv.DictReader((out / "per_case.csv").open()))
    assert len(rows) == 10
    assert len(list((out / "plots").glob("box_*.png"))) == 9
    assert len(list((out / "qc").glob("*.png"))) == 2
    assert (out / "index.html").read_text().count("<img") == 11
    # a missing prediction makes the exit code say the batch was partial
    next(pred.iterdir()).unlink()
    assert main(["evaluate", str(pred), str(gt), "-o", str(tmp_path / "r2"),
                 "--workers", "1", "--qc-cases", "0"]) == EXIT_PARTIAL


def test_cli_bad_arguments_are_one_line_errors(folders, tmp_path, capsys):
    pred, gt = folders
    assert main(["evaluate", str(pred), str(gt), "-o", str(tmp_path / "r"),
                 "--labels", "one:Anterior"]) == 2
    assert "--labels item 'one:Anterior'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", str(pred), str(gt), "-o", str(tmp_path / "r"), "--workers", "0"])


def test_partial_labels_and_regions_in_the_report(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    ball = sphere_label((16, 14, 10), radius=4)
    two = ball.copy()
    two[:8][two[:8] > 0] = 2
    _write(gt, "full.nii.gz", two)
    _write(pred, "full.nii.gz", two)
    _write(gt, "no_two.nii.gz", np.where(two == 2, 0, two))  # class 2 not contoured here
    _write(pred, "no_two.nii.gz", two)  # ... but present and predicted
    _write(gt, "none.nii.gz", np.where(two == 2, 0, two))  # not contoured, not predicted:
    _write(pred, "none.nii.gz", np.where(two == 2, 0, two))  # still not scored (no Dice 1)
    out = tmp_path / "report"
    result = evaluate_folders(pred, gt, out, progress=False, qc_cases=0, partial_labels=True,
                              regions={"both": [1, 2]},
                              case_roles={"training": ["x"],
                                          "evaluation": ["full", "no_two", "none"]})
    rows = {(r["case"], r["name"]): r for r in csv.DictReader((out / "per_case.csv").open())}
    assert rows[("no_two", "label_2")]["scored"] == "0.0"
    assert rows[("no_two", "label_2")]["dice"] == "nan"
    assert rows[("none", "label_2")]["scored"] == "0.0"
    assert rows[("none", "label_2")]["dice"] == "nan"
    assert rows[("full", "label_2")]["dice"] == "1.0"
    assert rows[("full", "both")]["label"] == "1+2" and rows[("full", "both")]["dice"] == "1.0"
    summary = json.loads((out / "summary.json").read_text())
    stats = summary["per_class"]["label_2"]
    assert stats["n_not_scored"] == 2 and stats["dice"]["n"] == 1 and stats["n_spurious"] == 0
    assert summary["regions"] == {"both": [1, 2]} and summary["partial_labels"]
    assert summary["cases"]["evaluation"] == ["full", "no_two", "none"]
    assert "Cases" in (out / "index.html").read_text()
    assert result.labels[2] == "label_2"


def test_cli_regions_and_partial_labels(folders, tmp_path, capsys):
    pred, gt = folders
    code = main(["evaluate", str(pred), str(gt), "-o", str(tmp_path / "r"), "--qc-cases", "0",
                 "--regions", "all=1,2", "--partial-labels", "--workers", "1"])
    assert code == EXIT_PARTIAL  # case_c, case_d as before
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert "all" in summary["per_class"] and summary["partial_labels"]
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(pred), str(gt), "-o", str(tmp_path / "r2"), "--regions", "all=a,b"])
    assert exit_info.value.code == 2 and "NAME=1,2,3" in capsys.readouterr().err
