"""Datasets: discovery (nnU-Net v2 raw, Decathlon, paired folders, DICOM studies labelled by
mask series, RTSTRUCT or DICOM-SEG files), reading, validation, export to nnU-Net."""

from medseg.data.dataset import Case, Dataset
from medseg.data.decathlon import load_decathlon
from medseg.data.dicom_annotations import (
    describe_annotation_cases,
    describe_dataset,
    load_annotated_study,
)
from medseg.data.dicom_study import describe_pairs, load_dicom_study
from medseg.data.listing import read_listing, write_listing
from medseg.data.load import DEFAULT_LABEL_SOURCE, LABEL_SOURCES, LabelSource, load_dataset
from medseg.data.nnunet import load_nnunet_raw
from medseg.data.paired import load_paired_folders
from medseg.data.reading import read_case
from medseg.data.validate import ValidationReport, validate_dataset

__all__ = [
    "DEFAULT_LABEL_SOURCE",
    "LABEL_SOURCES",
    "Case",
    "Dataset",
    "LabelSource",
    "ValidationReport",
    "describe_annotation_cases",
    "describe_dataset",
    "describe_pairs",
    "load_annotated_study",
    "load_dataset",
    "load_decathlon",
    "load_dicom_study",
    "load_nnunet_raw",
    "load_paired_folders",
    "read_case",
    "read_listing",
    "validate_dataset",
    "write_listing",
]
