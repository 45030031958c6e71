"""The bad-input corpus: every kind of broken input gets its exact documented outcome.

One table row per kind: builder (tests/reliability/corpus.py) → action → expected error
class + message pattern (the message must also name the file, series or case), or, for
dataset kinds that are handled rather than fatal, the validation outcome. Each error kind
is checked through the library call and through the CLI (exit code 2, exactly one line on
stderr, no traceback). Adding a kind is one line in ``KINDS``.
"""

from __future__ import annotations

import builtins
import io
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medseg.cli.main import main
from medseg.core import Volume
from medseg.core.errors import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    CheckpointError,
    ConfigError,
    DatasetError,
    GeometryError,
    InputError,
    MedsegError,
    OutputError,
    ReadError,
)
from medseg.core.paths import ensure_outside_inputs
from medseg.data import load_dataset, read_case, validate_dataset
from medseg.inference.batch import BatchOptions, check_outputs
from medseg.inference.jobs import discover_jobs
from medseg.inference.predictor import Predictor
from medseg.io import read_volume, write_volume
from medseg.pipeline import load_config, run_pipeline
from medseg.preprocess.case import preprocess_case
from medseg.sampling.loader import SamplerSettings, make_batch
from tests.inference.helpers import tiny_plan, write_run
from tests.reliability import corpus, corpus_data
from tests.reliability.corpus import Built


@dataclass(frozen=True)
class Action:
    """What is done with a built input: a library call and the equivalent CLI arguments."""

    call: Callable[[Built, Path], Any]
    argv: Callable[[Built, Path], list[str]]


def _good_image(tmp: Path) -> Path:
    return corpus.good_nifti(tmp / "inputs")


def _model(tmp: Path) -> Path:
    run = tmp / "model"
    if not run.exists():
        write_run(run, tiny_plan(), [0])
    return run


READ = Action(lambda b, _: read_volume(b.path),
              lambda b, tmp: ["convert", str(b.path), str(tmp / "converted.nii.gz")])
DATASET = Action(  # loading errors raise; bad cases are excluded by the validation
    lambda b, _: validate_dataset(load_dataset(b.path), progress=False),
    lambda b, tmp: ["plan", str(b.path), "--out", str(tmp / "run")],
)
PIPELINE = Action(lambda b, _: load_config(b.path), lambda b, _: ["run", str(b.path)])
PIPELINE_RUN = Action(lambda b, _: run_pipeline(b.path), lambda b, _: ["run", str(b.path)])
CHECKPOINT = Action(
    lambda b, _: Predictor.load(b.path),
    lambda b, tmp: ["predict", "-m", str(b.path), "-i", str(_good_image(tmp)),
                    "-o", str(tmp / "predictions"), "--no-progress"],
)
WRITE = Action(
    lambda b, _: write_volume(Volume(corpus.image_array()[None], corpus.AFFINE), b.path),
    lambda b, tmp: ["convert", str(_good_image(tmp)), str(b.path)],
)
CONVERT_INTO_INPUT = Action(
    lambda b, _: ensure_outside_inputs(b.path, [b.path.parents[1]]),  # what convert calls
    lambda b, _: ["convert", str(b.path.parents[1]), str(b.path)],
)
PREDICT_INTO = Action(
    lambda b, _: check_outputs(discover_jobs([b.path.parents[1]], ["MRI"]), b.path.parent,
                               BatchOptions()),
    lambda b, tmp: ["predict", "-m", str(_model(tmp)), "-i", str(b.path.parents[1]),
                    "-o", str(b.path.parent), "--no-progress"],
)


@dataclass(frozen=True)
class Kind:
    """A builder, what is done with its output, and the exact expected outcome.

    ``error`` None means the input is handled, not refused: for dataset kinds ``match`` is
    then the exclusion reason of the broken case ("" = the case is kept as valid).
    """

    build: Callable[[Path], Built]
    action: Action
    error: type[MedsegError] | None
    match: str
    locked: bool = False  # made unreadable before the action


DENIED = r"cannot open file \(Permission denied\)"
KINDS: dict[str, Kind] = {
    # single files
    "zero-byte file": Kind(corpus.zero_byte_nifti, READ, ReadError, r"empty file \(0 bytes\)"),
    "random bytes .nii.gz": Kind(corpus.random_bytes_nifti, READ, ReadError,
                                 r"cannot read NIfTI file"),
    "gzip of random bytes": Kind(corpus.random_bytes_gzip_nifti, READ, ReadError,
                                 r"cannot read NIfTI file"),
    "truncated gzip": Kind(corpus.truncated_gzip, READ, ReadError, r"cannot read NIfTI file"),
    "truncated .nii data": Kind(corpus.truncated_nifti_data, READ, ReadError,
                                r"need 2880 bytes of voxel data, more than the file can hold"),
    "zero affine": Kind(corpus.zero_affine_nifti, READ, GeometryError, r"affine is singular"),
    "singular affine": Kind(corpus.singular_affine_nifti, READ, GeometryError,
                            r"affine is singular"),
    "NaN/Inf voxels": Kind(corpus.nan_voxels_nifti, READ, ReadError, r"2 NaN/Inf voxel"),
    "NIfTI unknown datatype": Kind(corpus.unknown_datatype_nifti, READ, ReadError,
                                   r"cannot read NIfTI file.*data code 0"),
    "NIfTI absurd dimensions": Kind(corpus.absurd_dims_nifti, READ, ReadError,
                                    r"\(30000, 30000, 30000\) of float32 need \d+ bytes"),
    "5D NIfTI": Kind(corpus.five_d_nifti, READ, ReadError, r"unsupported NIfTI data shape"),
    "unknown file format": Kind(corpus.unknown_format, READ, ReadError,
                                r"unrecognised image format"),
    "path does not exist": Kind(corpus.missing_path, READ, ReadError, r"no such file or folder"),
    "unreadable file": Kind(corpus.unreadable_nifti, READ, ReadError, DENIED, locked=True),
    "unreadable DICOM slice": Kind(corpus.unreadable_dicom, READ, ReadError, DENIED,
                                   locked=True),
    # DICOM
    "DICOM without pixel data": Kind(corpus.dicom_without_pixel_data, READ, ReadError,
                                     r"holds no image"),
    "DICOM malformed header value": Kind(corpus.dicom_malformed_value, READ, ReadError,
                                         r"malformed DICOM header"),
    "DICOM zero PixelSpacing": Kind(corpus.dicom_zero_pixel_spacing, READ, GeometryError,
                                    r"PixelSpacing must be positive"),
    "DICOM missing slice": Kind(corpus.dicom_series_missing_slice, READ, GeometryError,
                                r"missing slice"),
    "DICOM duplicated positions": Kind(corpus.dicom_series_duplicate_positions, READ,
                                       GeometryError, r"share a position"),
    "DICOM two series interleaved": Kind(corpus.dicom_two_series_interleaved, READ, InputError,
                                         r"2 series found; choose one"),
    "DICOM mixed rows/columns": Kind(corpus.dicom_series_mixed_sizes, READ, GeometryError,
                                     r"mixed image sizes"),
    "DICOM non-uniform spacing": Kind(corpus.dicom_series_non_uniform_spacing, READ,
                                      GeometryError, r"non-uniform slice spacing"),
    "DICOM gantry tilt": Kind(corpus.dicom_series_gantry_tilt, READ, GeometryError,
                              r"gantry tilt"),
    "DICOM compressed, no decoder": Kind(corpus.dicom_compressed_no_decoder, READ, ReadError,
                                         r"cannot decode pixel data \(High-Throughput JPEG"),
    "DICOM compressed, corrupt data": Kind(corpus.dicom_compressed_corrupt, READ, ReadError,
                                           r"cannot decode pixel data \(JPEG 2000"),
    "DICOM truncated pixel data": Kind(corpus.dicom_truncated_pixel_data, READ, ReadError,
                                       r"pixel data"),
    "DICOM zero-byte member": Kind(corpus.dicom_zero_byte_member, READ, ReadError, r"0 bytes"),
    "DICOMDIR-only folder": Kind(corpus.dicomdir_only, READ, ReadError, r"only a DICOMDIR"),
    "folder with no images": Kind(corpus.folder_without_images, READ, ReadError,
                                  r"no DICOM images found"),
    "empty folder": Kind(corpus.empty_folder, READ, ReadError, r"folder is empty"),
    # datasets: handled by validation (the broken case is excluded with a reason, or kept)
    "NaN/Inf image in training set": Kind(corpus_data.nan_image_in_dataset, DATASET, None,
                                          r"NaN/Inf voxel"),
    "label values not in dataset": Kind(corpus_data.undeclared_label_values, DATASET, None,
                                        r"label values \[7\] in .* not among the declared"),
    "label shape differs from image": Kind(corpus_data.label_on_other_grid, DATASET, None,
                                           r"label grid differs"),
    "label affine differs from image": Kind(corpus_data.label_shifted_grid, DATASET, None,
                                            r"label grid differs"),
    "image with no label": Kind(corpus_data.image_without_label, DATASET, None, r"missing label"),
    "label file missing": Kind(corpus_data.label_file_missing, DATASET, None, r"missing file"),
    "4D label": Kind(corpus_data.four_d_label, DATASET, None, r"label has 2 channels"),
    "4D image, 3D expected": Kind(corpus_data.four_d_image_mono_modal, DATASET, None,
                                  r"image has 3 channels but the dataset declares 1"),
    "empty label (no foreground)": Kind(corpus_data.empty_label_in_dataset, DATASET, None, ""),
    # dataset descriptions
    "dataset.json not JSON": Kind(corpus_data.dataset_json_not_json, DATASET, DatasetError,
                                  r"cannot read dataset description"),
    "dataset.json missing keys": Kind(corpus_data.dataset_json_missing_keys, DATASET,
                                      DatasetError, r"needs a non-empty 'labels'"),
    "dataset.json bad training entry": Kind(corpus_data.dataset_json_bad_training_entry,
                                            DATASET, DatasetError, r"bad training entry"),
    # pipeline files
    "pipeline unknown key": Kind(corpus_data.pipeline_unknown_key, PIPELINE, ConfigError,
                                 r"unknown key \(did you mean 'epochs'\?\)"),
    "pipeline not a mapping": Kind(corpus_data.pipeline_not_a_mapping, PIPELINE, ConfigError,
                                   r"mapping"),
    "pipeline invalid YAML": Kind(corpus_data.pipeline_bad_yaml, PIPELINE, ConfigError, r"YAML"),
    "pipeline run folder inside dataset": Kind(corpus_data.pipeline_run_inside_dataset,
                                               PIPELINE_RUN, OutputError,
                                               r"inside the input folder"),
    # checkpoints
    "checkpoint random bytes": Kind(corpus_data.checkpoint_random_bytes, CHECKPOINT,
                                    CheckpointError, r"cannot read checkpoint"),
    "checkpoint foreign torch file": Kind(corpus_data.checkpoint_foreign_dict, CHECKPOINT,
                                          CheckpointError, r"not a medseg-checkpoint-v1 file"),
    "checkpoint that runs code": Kind(corpus_data.checkpoint_runs_code, CHECKPOINT, CheckpointError,
                                      r"cannot read checkpoint.*[Ww]eights.only"),
    "checkpoint of other labels": Kind(corpus_data.checkpoint_other_plan, CHECKPOINT,
                                       CheckpointError, r"labels differ"),
    "checkpoint of other channels": Kind(corpus_data.checkpoint_other_channels, CHECKPOINT,
                                         CheckpointError, r"channels differ"),
    # outputs
    "output folder is a file": Kind(corpus_data.output_folder_is_file, WRITE, OutputError,
                                    r"output folder is a file"),
    "output folder below a file": Kind(corpus_data.output_below_a_file, WRITE, OutputError,
                                       r"Not a directory"),
    "convert into the input DICOM folder": Kind(corpus_data.output_inside_dicom_input,
                                                CONVERT_INTO_INPUT, OutputError,
                                                r"inside the input folder"),
    "predict into the input DICOM folder": Kind(corpus_data.output_inside_dicom_input, PREDICT_INTO,
                                                OutputError, r"inside the input folder"),
}

ERRORS = [name for name, kind in KINDS.items() if kind.error is not None]
HANDLED = [name for name, kind in KINDS.items() if kind.error is None]


def test_corpus_has_enough_kinds() -> None:
    assert len(KINDS) >= 25


def lock(built: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the file ``built`` names unreadable.

    chmod 000 does not stop root, so as root ``open`` is patched to fail for that file the
    way the kernel would (PermissionError, errno 13).
    """
    target = built.path if built.path.is_file() else built.path / built.names
    if os.geteuid() != 0:
        target.chmod(0)
        return
    real_open = builtins.open

    def guarded(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, str | os.PathLike) and Path(file) == target:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(io, "open", guarded)


def build(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Kind, Built]:
    kind = KINDS[name]
    built = kind.build(tmp_path)
    if kind.locked:
        lock(built, monkeypatch)
    return kind, built


@pytest.mark.parametrize("name", ERRORS)
def test_library_raises_documented_error(name: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    kind, built = build(name, tmp_path, monkeypatch)
    with pytest.raises(MedsegError) as info:
        kind.action.call(built, tmp_path)
    assert type(info.value) is kind.error, f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    assert re.search(kind.match, message, re.S), message
    assert built.names in message, message
    assert not (tmp_path / corpus_data.CODE_RAN_MARKER).exists()


@pytest.mark.parametrize("name", ERRORS)
def test_cli_prints_one_line_and_exits_2(name: str, tmp_path: Path, capsys,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    kind, built = build(name, tmp_path, monkeypatch)
    code = main(kind.action.argv(built, tmp_path))
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT, err
    assert err.startswith("medseg: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert re.search(kind.match, err) and built.names in err, err


@pytest.mark.parametrize("name", HANDLED)
def test_dataset_validation_outcome(name: str, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    kind, built = build(name, tmp_path, monkeypatch)
    report = kind.action.call(built, tmp_path)
    reasons = dict(report.excluded)
    valid = {case.case_id for case in report.valid}
    assert {"case_001", "case_002"} <= valid  # the good cases are never affected
    if kind.match:
        assert built.case not in valid
        assert re.search(kind.match, reasons[built.case]), reasons[built.case]
    else:
        assert built.case in valid and not reasons


@pytest.mark.parametrize("name", HANDLED)
def test_cli_plan_reports_exclusions(name: str, tmp_path: Path, capsys,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    kind, built = build(name, tmp_path, monkeypatch)
    assert main(kind.action.argv(built, tmp_path)) == EXIT_OK
    out = capsys.readouterr().out
    excluded = re.search(rf"excluded {built.case}: (.*)", out)
    if kind.match:
        assert excluded and re.search(kind.match, excluded.group(1)), out
    else:
        assert excluded is None and "3 valid case(s), 0 excluded" in out, out


def test_empty_label_case_is_sampled_without_foreground(tmp_path: Path) -> None:
    """A kept case with no foreground: foreground-centred sampling falls back to random
    patches instead of failing."""
    built = corpus_data.empty_label_in_dataset(tmp_path)
    case = next(c for c in load_dataset(built.path).cases if c.case_id == built.case)
    plan = tiny_plan(labels={0: "background", 1: "left", 2: "right"})
    pre = preprocess_case(*read_case(case), plan)
    source = InMemorySource(pre.image, pre.label)
    config = plan.to_dict()["configurations"]["3d"]
    settings = SamplerSettings.from_config(config, foreground_fraction=1.0)
    image, label = make_batch(source, [built.case], settings, np.random.default_rng(0))
    assert image.shape[2:] == label.shape[2:] == (8, 8, 8)
    assert not label.any()


@dataclass(frozen=True)
class InMemorySource:
    """One preprocessed case as a patch source; its foreground lists are empty."""

    image_array: np.ndarray
    label_array: np.ndarray

    def image(self, case: str, mmap: bool = True) -> np.ndarray:
        return self.image_array

    def label(self, case: str, mmap: bool = True) -> np.ndarray:
        return self.label_array

    def foreground(self, case: str) -> dict[int, np.ndarray]:
        return {1: np.zeros((0, 3), np.int32), 2: np.zeros((0, 3), np.int32)}


def test_interleaved_series_are_separated_by_selector(tmp_path: Path) -> None:
    """Refused without a selector (above); with one, each series gets only its own files."""
    built = corpus.dicom_two_series_interleaved(tmp_path)
    first = read_volume(built.path, series=corpus.SERIES_UID)
    second = read_volume(built.path, series="second")
    assert first.meta["series_uid"] == corpus.SERIES_UID
    assert second.meta["series_uid"] == corpus.SERIES_UID + ".2"
    assert first.spatial_shape[2] == second.spatial_shape[2] == 4
    assert not set(first.meta["dicom_files"]) & set(second.meta["dicom_files"])
