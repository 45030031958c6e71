"""Reading cases: DICOM slice regularisation travels with the case, into the cache key."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from medseg.core import GeometryError
from medseg.data import Case, Dataset, read_case
from medseg.preprocess.cache import input_identity
from tests.conftest import make_affine, sphere_label
from tests.io import dicom_factory

AFFINE = make_affine((0.8, 0.8, 2.0), "LPS", (0, 0, 0), (5.0, -10.0, 20.0))
SHAPE = (10, 9, 8)


def irregular_case(root: Path) -> Case:
    """An image and a mask series with the same slice (k = 3) missing."""
    image = np.random.default_rng(0).integers(0, 300, SHAPE, dtype=np.int16)
    mask = sphere_label(SHAPE, radius=3).astype(np.int16)
    folders = []
    for name, array in (("image", image), ("mask", mask)):
        items = dicom_factory.series_datasets(array, AFFINE, description=name)
        del items[3]
        dicom_factory.save_series(items, root / name)
        folders.append(root / name)
    return Case("c0", (folders[0],), folders[1])


def test_irregular_case_is_refused_unless_regularised(tmp_path: Path) -> None:
    case = irregular_case(tmp_path)
    with pytest.raises(GeometryError, match="missing slice"):
        read_case(case)
    image, label = read_case(replace(case, regularize=True))
    assert image.spatial_shape == SHAPE and label is not None and label.same_grid(image)
    np.testing.assert_allclose(image.affine, label.affine)
    assert set(np.unique(label.array)) <= {0, 1}  # the mask was not blended
    assert image.meta["regularized"]["reasons"] == ["missing slices"]


def test_the_flag_survives_dataset_json_and_changes_the_cache_identity(tmp_path: Path) -> None:
    case = irregular_case(tmp_path)
    dataset = Dataset("d", tmp_path, {0: "background", 1: "mask"}, {0: "MR"}, (case,))
    regularised = dataset.with_regularized_slices()
    assert regularised.cases[0].regularize and not dataset.cases[0].regularize
    assert Dataset.from_dict(regularised.to_dict()) == regularised
    assert "regularize" not in dataset.cases[0].to_dict()  # old dataset.json files unchanged
    assert input_identity(regularised.cases[0]) != input_identity(case)


def test_the_preprocessing_record_says_the_source_was_regularised(tmp_path: Path) -> None:
    from medseg.preprocess import preprocess_case
    from tests.preprocess.test_invert import make_plan

    image, label = read_case(replace(irregular_case(tmp_path), regularize=True))
    record = preprocess_case(image, label, make_plan()).record
    assert record["source_regularized"]["reasons"] == ["missing slices"]
    assert record["source_shape"] == list(SHAPE)
