"""Input discovery and output naming."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.core.errors import InputError, ReadError
from medseg.data import Case
from medseg.inference.jobs import (
    Job,
    discover_jobs,
    modality_of_channel,
    safe_name,
    strip_suffix,
    unique_names,
)
from medseg.io import write_volume
from tests.inference.dicom_synth import write_dicom_series


def test_names_and_suffixes():
    assert strip_suffix("case_001.nii.gz") == "case_001"
    assert strip_suffix("scan.MHA") == "scan"
    assert safe_name(" 5388-Mask Tumor/63335 ") == "5388-Mask_Tumor_63335"
    assert modality_of_channel("CT") == "CT"
    assert modality_of_channel("T1post") == modality_of_channel("MRI") == "MR"


def test_unique_names_suffix_repeats():
    jobs = [Job(n, Case(n, (Path(n),), None)) for n in ("a", "b", "A", "a")]
    assert [j.name for j in unique_names(jobs)] == ["a", "b", "A_2", "a_3"]


def test_files_keep_their_name_and_channels_group(tmp_path, volume_factory):
    for name in ("p1_0000.nii.gz", "p1_0001.nii.gz", "p2_0000.nii.gz", "p2_0001.nii.gz"):
        write_volume(volume_factory(), tmp_path / name)
    single = discover_jobs([tmp_path], ["MRI"])
    # a one-channel model: <case>_0000 is nnU-Net's name of <case>, the rest keep their name
    assert [j.name for j in single] == ["p1", "p1_0001", "p2", "p2_0001"]
    assert [j.keep_file_name for j in single] == [None, "p1_0001.nii.gz", None,
                                                  "p2_0001.nii.gz"]
    pairs = discover_jobs([tmp_path], ["T1", "T2"])
    assert [(j.name, len(j.case.images)) for j in pairs] == [("p1", 2), ("p2", 2)]


def test_series_matching_by_description_then_modality(tmp_path, volume_factory):
    write_dicom_series(volume_factory(), tmp_path / "study" / "s1", "T1post")
    write_dicom_series(volume_factory(), tmp_path / "study" / "s2", "FLAIR_reg")
    assert [j.name for j in discover_jobs([tmp_path / "study"], ["T1post"])] == ["s1"]
    assert [j.name for j in discover_jobs([tmp_path / "study"], ["MRI"])] == ["s1", "s2"]
    both = discover_jobs([tmp_path / "study"], ["T1post", "FLAIR_reg"])
    assert [(j.name, len(j.case.images)) for j in both] == [("study", 2)]
    assert all(j.is_dicom for j in both)
    with pytest.raises(InputError, match="no series matches the model's channel 'CT'"):
        discover_jobs([tmp_path / "study"], ["CT"])
    with pytest.raises(InputError, match="--series 'PD'"):
        discover_jobs([tmp_path / "study"], ["MRI"], series="PD")


def test_missing_input_is_a_read_error(tmp_path):
    with pytest.raises(ReadError, match="input not found"):
        discover_jobs([tmp_path / "nope"], ["MRI"])


def test_regularize_marks_every_job(tmp_path, volume_factory):
    write_dicom_series(volume_factory(), tmp_path / "study" / "s1", "T1post")
    write_volume(volume_factory(), tmp_path / "files" / "a.nii.gz")
    inputs = [tmp_path / "study", tmp_path / "files"]
    assert not any(j.case.regularize for j in discover_jobs(inputs, ["MRI"]))
    assert all(j.case.regularize for j in discover_jobs(inputs, ["MRI"], regularize=True))
