"""Real DICOM data: predictions and DICOM-SEG outputs line up with the source series."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from medseg.inference import Predictor, predict_volume
from medseg.inference.batch import BatchOptions, predict_batch
from medseg.inference.jobs import discover_jobs
from medseg.io import read_volume
from medseg.io.dicom_seg_read import read_dicom_seg
from medseg.models import build_network
from medseg.preprocess.plan import Plan
from tests.conftest import DICOM_ROOT, requires_shared

pytestmark = [requires_shared, pytest.mark.slow]


def _plan(spacing, patch) -> Plan:
    return Plan.from_dict({
        "format": "medseg-plan-v1", "dataset_name": "Brain",
        "labels": {"0": "background", "1": "tumour"}, "channels": {"0": "T1post"},
        "target_spacing": list(spacing), "normalization": [{"scheme": "zscore_nonzero"}],
        "configurations": {"3d": {
            "patch_size": list(patch), "batch_size": 2, "spacing": list(spacing),
            "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
            "filters": [4, 8, 8], "deep_supervision": False}},
    })


def test_oblique_pgbm_series_to_dicom_seg(tmp_path):
    study = next((DICOM_ROOT / "pgbm" / "PGBM-001").iterdir())
    jobs = discover_jobs([study], ["T1post"])
    assert len(jobs) == 1 and "T1post" in jobs[0].name
    image = read_volume(jobs[0].case.images[0], jobs[0].case.image_series[0])
    plan = _plan(image.spacing, (64, 64, 16))
    predictor = Predictor(plan, "3d", [build_network(plan, "3d")])
    labels = predict_volume(predictor, image)
    np.testing.assert_array_equal(labels.affine, image.affine)
    assert labels.spatial_shape == image.spatial_shape

    results = predict_batch(predictor, jobs, tmp_path, BatchOptions("dicom-seg", progress=False))
    assert [r.status for r in results] == ["ok"]
    seg = pydicom.dcmread(results[0].output)
    referenced = {item.ReferencedSOPInstanceUID
                  for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == set(image.meta["sop_instance_uids"])
    decoded = read_dicom_seg(results[0].output, image, plan.labels).labels
    np.testing.assert_array_equal(decoded.array, labels.array)


def test_hippocampus_dicom_crops_keep_their_grid(tmp_path):
    jobs = discover_jobs([DICOM_ROOT / "hippocampus_crops"], ["MRI"])
    assert [j.name for j in jobs] == ["13_HCropVolume", "14_HCropVolume"]
    plan = _plan((1.0, 1.0, 1.0), (16, 16, 16))
    predictor = Predictor(plan, "3d", [build_network(plan, "3d")])
    results = predict_batch(predictor, jobs, tmp_path, BatchOptions(progress=False))
    for job, result in zip(jobs, results, strict=True):
        source = read_volume(job.case.images[0], job.case.image_series[0])
        out = read_volume(result.output)
        assert out.spatial_shape == source.spatial_shape
        np.testing.assert_allclose(out.affine, source.affine, atol=1e-4)
