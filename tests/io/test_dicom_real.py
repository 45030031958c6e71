"""Every real DICOM series reads with SimpleITK's geometry (to 1e-4 mm) and voxel values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medseg.io import list_series, read_volume
from medseg.io.sitk_io import sitk_to_volume
from tests.conftest import DICOM_ROOT, requires_shared


def _series_folders() -> list[Path]:
    if not DICOM_ROOT.is_dir():
        return []
    return sorted({info.folder for info in list_series(DICOM_ROOT)})


@requires_shared
@pytest.mark.slow
@pytest.mark.parametrize("folder", _series_folders(), ids=lambda p: p.name)
def test_real_series_matches_simpleitk(folder: Path):
    ours = read_volume(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    theirs = sitk_to_volume(reader.Execute(), {})
    assert ours.spatial_shape == theirs.spatial_shape
    np.testing.assert_allclose(ours.affine, theirs.affine, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(ours.array.astype(np.float64), theirs.array.astype(np.float64))


@requires_shared
def test_real_study_listing_and_selection():
    study = DICOM_ROOT / "pgbm" / "PGBM-001"
    infos = list_series(study)
    assert len(infos) == 8 and all(i.problem is None for i in infos)
    assert {i.description for i in infos} == {"T1post", "FLAIR_reg", "T2_reg", "Mask_Tumor"}
    mask_info = next(i for i in infos if i.description == "Mask_Tumor")
    mask = read_volume(study, series=mask_info.uid)
    assert set(np.unique(mask.array)) <= {0, 1}
    image = read_volume(mask_info.folder.parent, series="T1post")
    assert image.same_grid(mask, atol=1e-3)
    assert image.meta["frame_of_reference_uid"] == mask.meta["frame_of_reference_uid"]
