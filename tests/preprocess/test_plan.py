"""Planning: target spacing rule, patch/batch within the memory budget, plan JSON round trip."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from medseg.core.errors import ConfigError
from medseg.data import load_dataset
from medseg.preprocess import Plan, compute_fingerprint, plan_dataset
from medseg.preprocess.fingerprint import Fingerprint, IntensityStats
from medseg.preprocess.planning import (
    choose_slice_axis,
    plan_configuration,
    sided_labels,
    target_spacing,
    topology,
    training_bytes,
)
from tests.conftest import HIPPOCAMPUS, requires_shared
from tests.data.synthetic import write_decathlon


def fingerprint(spacings, shapes) -> Fingerprint:
    stats = IntensityStats(100.0, 20.0, 100.0, 0.0, 300.0, 10.0, 250.0)
    return Fingerprint(len(spacings), tuple(map(tuple, spacings)), tuple(map(tuple, shapes)),
                       (stats,), (0.9, 0.05, 0.05))


def test_target_spacing_is_median_when_isotropic():
    fp = fingerprint([(1, 1, 1), (1.2, 1.2, 1.2), (0.8, 1, 1.4)], [(50, 50, 50)] * 3)
    assert target_spacing(fp) == [1.0, 1.0, 1.2]


def test_anisotropic_axis_gets_tenth_percentile():
    spacings = [(0.7, 0.7, s) for s in (3.0, 4.0, 5.0, 5.0, 5.0, 6.0, 6.0)]
    fp = fingerprint(spacings, [(256, 256, 30)] * len(spacings))
    target = target_spacing(fp)
    assert target[:2] == [0.7, 0.7]
    assert target[2] == pytest.approx(np.percentile([3, 4, 5, 5, 5, 6, 6], 10))


def test_anisotropic_spacing_with_many_slices_keeps_median():
    fp = fingerprint([(0.7, 0.7, 5.0)] * 3, [(100, 100, 200)] * 3)
    assert target_spacing(fp) == [0.7, 0.7, 5.0]


def test_configuration_consistent_and_within_budget():
    config = plan_configuration([0.7, 0.7, 3.0], [400, 400, 80], 1e9, memory_budget_gb=4.0)
    config.check()
    assert config.strides[0] == (1, 1, 1) and len(config.strides) == len(config.filters)
    assert config.strides[1] == (2, 2, 1)  # the coarse axis is not pooled at first
    assert config.kernel_sizes[0] == (3, 3, 1)
    assert 2 * training_bytes(config.patch_size, config.strides, config.filters) <= 3 * 2**30
    assert config.batch_size >= 2
    small = plan_configuration([0.7, 0.7, 3.0], [400, 400, 80], 1e9, memory_budget_gb=2.0)
    assert np.prod(small.patch_size) < np.prod(config.patch_size)


def test_topology_stops_at_min_feature_map():
    strides, kernels = topology([1.0, 1.0], [16, 64], max_pools=6)
    assert [s[0] for s in strides] == [1, 2, 2, 1, 1]  # 16 -> 8 -> 4, then stop
    assert [s[1] for s in strides] == [1, 2, 2, 2, 2]
    assert len(kernels) == len(strides)


def test_plan_json_round_trip_and_hash(tmp_path):
    root = write_decathlon(tmp_path / "ds", n_cases=3)
    ds = load_dataset(root)
    plan = plan_dataset(ds, compute_fingerprint(ds, progress=False))
    plan.save(tmp_path / "plan.json")
    loaded = Plan.load(tmp_path / "plan.json")
    assert loaded == plan
    assert set(plan.configurations) == {"3d", "2d"}
    assert plan.configuration("2d").slice_axis is not None
    smaller_batch = {**plan.configurations,
                     "3d": replace(plan.configurations["3d"], batch_size=1)}
    assert plan.with_changes(configurations=smaller_batch).preprocessing_hash() == \
        plan.preprocessing_hash()
    assert plan.with_changes(target_spacing=(2.0, 2.0, 2.0)).preprocessing_hash() != \
        plan.preprocessing_hash()


@pytest.mark.parametrize("change,message", [
    ({"format": "other"}, "not a medseg-plan-v1"),
    ({"target_spacing": [1, 1]}, "target_spacing"),
    ({"normalization": []}, "normalization"),
    ({"label_interpolation": "cubic"}, "label_interpolation"),
    ({"normalization": [{"scheme": "minmax"}]}, "unknown scheme 'minmax'"),
    ({"normalization": [{"scheme": "ct", "clip": [0, 1]}]}, "needs"),
])
def test_invalid_plan_rejected(tmp_path, change, message):
    root = write_decathlon(tmp_path / "ds", n_cases=2)
    ds = load_dataset(root)
    d = {**plan_dataset(ds, compute_fingerprint(ds, progress=False)).to_dict(), **change}
    with pytest.raises(ConfigError, match=message):
        Plan.from_dict(d)


def test_plan_file_errors_name_the_file(tmp_path):
    (tmp_path / "plan.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"plan\.json"):
        Plan.load(tmp_path / "plan.json")


@requires_shared
@pytest.mark.slow
def test_hippocampus_plan_is_sensible():
    ds = load_dataset(HIPPOCAMPUS)
    fp = compute_fingerprint(ds, progress=False)
    plan = plan_dataset(ds, fp)
    assert plan.target_spacing == (1.0, 1.0, 1.0)
    assert plan.normalization == ({"scheme": "zscore_nonzero"},)
    config = plan.configuration("3d")
    median = np.asarray(fp.median_shape)
    assert np.all(np.asarray(config.patch_size) >= median)  # covers a whole median case
    assert np.prod(config.patch_size) <= 2 * np.prod(median)
    assert config.batch_size >= 2
    assert plan.configuration("2d").patch_size == config.patch_size[:2]  # axial slices


def test_tiny_budget_terminates_with_smallest_patch():
    config = plan_configuration([0.5, 0.5, 100.0], [64, 64, 4], 1e6, memory_budget_gb=1.0001)
    assert config.patch_size[2] == 4 and config.batch_size >= 2
    config.check()


def test_ct_channel_gets_dataset_wide_clipping(tmp_path):
    ds = load_dataset(write_decathlon(tmp_path / "ds", n_cases=3, modality="CT"))
    fp = compute_fingerprint(ds, progress=False)
    (scheme,) = plan_dataset(ds, fp).normalization
    assert scheme["scheme"] == "ct"
    stats = fp.intensity[0]
    assert scheme["clip"] == [stats.percentile_00_5, stats.percentile_99_5]
    assert 140 < scheme["mean"] < 160  # foreground of the synthetic cases is ~N(150, 10)
    assert scheme["std"] == pytest.approx(stats.std)


def test_anisotropic_dataset_gets_anisotropic_plan_and_in_plane_rotation(tmp_path):
    ds = load_dataset(write_decathlon(tmp_path / "ds", n_cases=3, shape=(40, 40, 12),
                                      spacing=(0.8, 0.8, 4.0)))
    plan = plan_dataset(ds, compute_fingerprint(ds, progress=False))
    config = plan.configuration("3d")
    assert plan.target_spacing == (0.8, 0.8, 4.0)
    assert config.kernel_sizes[0] == (3, 3, 1)  # no convolution across the coarse slices
    assert config.strides[1] == (2, 2, 1)  # pooled in-plane first
    assert config.training.rotation == "in-plane" and "anisotropic" in \
        config.reasons["training.rotation"]
    iso = load_dataset(write_decathlon(tmp_path / "iso", n_cases=3))
    assert plan_dataset(iso, compute_fingerprint(iso, progress=False)) \
        .configuration("3d").training.rotation == "3d"


def test_two_channel_dataset_is_normalized_per_channel(tmp_path):
    from medseg.data import read_case
    from medseg.preprocess import preprocess_case

    ds = load_dataset(write_decathlon(tmp_path / "ds", n_cases=2, channels=2))
    plan = plan_dataset(ds, compute_fingerprint(ds, progress=False))
    assert plan.normalization == ({"scheme": "zscore_nonzero"},) * 2
    image, label = read_case(ds.cases[0])
    image = image.with_array(image.array * np.array([1.0, 40.0])[:, None, None, None] +
                             np.array([0.0, 500.0])[:, None, None, None] * (image.array != 0))
    pre = preprocess_case(image, label, plan.with_changes(image_interpolation="nearest"))
    for c in range(2):  # each channel z-scored inside its own non-zero voxels
        inside = pre.image[c][pre.image[c] != 0]
        assert abs(inside.mean()) < 0.05 and abs(inside.std() - 1) < 0.05


def test_partial_labels_auto_turns_on_when_a_class_is_missing_from_some_cases(tmp_path):
    from medseg.io import read_volume, write_volume

    root = write_decathlon(tmp_path / "ds", n_cases=3)
    ds = load_dataset(root)
    full = plan_dataset(ds, compute_fingerprint(ds, progress=False))
    assert not full.partial_labels and "every class" in full.auto["partial_labels"]
    path = root / "labelsTr" / "case_001.nii.gz"
    label = read_volume(path)
    write_volume(label.with_array(np.where(label.array == 2, 0, label.array)), path)
    fp = compute_fingerprint(ds, progress=False)
    assert fp.class_presence == pytest.approx((1.0, 1.0, 2 / 3))
    partial = plan_dataset(ds, fp)
    assert partial.partial_labels and "right (33% of cases)" in partial.auto["partial_labels"]
    assert not plan_dataset(ds, fp, partial_labels="off").partial_labels
    assert plan_dataset(ds, compute_fingerprint(load_dataset(root), progress=False),
                        partial_labels="on").partial_labels
    loaded = Plan.from_dict(partial.to_dict())
    assert loaded.partial_labels and loaded == partial


@pytest.mark.parametrize("name, sided", [
    ("LeftParotid", True), ("Parotid_R", True), ("kidney left", True), ("RLung", True),
    ("Glnd_Submand_L", True), ("lt_eye", True), ("Brainstem", False), ("Larynx", False),
    ("vertebrae_L1", False), ("L5", False), ("Rectum", False), ("Liver", False),
    ("Lung", False),
])
def test_labels_naming_a_body_side_are_found(name, sided):
    assert sided_labels([name]) == ([name] if sided else [])


def test_sided_labels_are_not_mirrored_across_left_right(tmp_path):
    import json

    root = write_decathlon(tmp_path / "ds", n_cases=3)  # labels "left" and "right"
    ds = load_dataset(root)
    fp = compute_fingerprint(ds, progress=False)
    plan = plan_dataset(ds, fp)
    for name in ("3d", "2d"):
        config = plan.configuration(name)
        assert config.training.mirror_axes == (1, 2)
        assert "left, right" in config.reasons["training.mirror_axes"]
    assert Plan.from_dict(plan.to_dict()) == plan
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"0": "background", "1": "anterior", "2": "posterior"}
    (root / "dataset.json").write_text(json.dumps(meta))
    unsided = plan_dataset(load_dataset(root), fp)
    assert unsided.configuration("3d").training.mirror_axes == (0, 1, 2)
    assert "training.mirror_axes" not in unsided.configuration("3d").reasons


@pytest.mark.parametrize("spacing,sided,axis", [
    ((1.0, 1.0, 5.0), False, 2),  # thick axial slices: across them (nnU-Net)
    ((0.7, 4.0, 0.7), False, 1),  # coronal acquisition
    ((4.0, 0.7, 0.7), False, 0),  # sagittal acquisition, no sides in the labels
    ((4.0, 0.7, 0.7), True, 2),  # ... with sides: never left-right (then the tie rule)
    ((3.92, 3.92, 2.5), False, 1),  # tie between left-right and anterior-posterior
    ((3.92, 3.92, 2.5), True, 1),
    ((1.0, 1.0, 1.0), False, 2),  # isotropic: axial
    ((1.0, 1.02, 1.0), False, 2),  # within the tie tolerance: still axial
])
def test_2d_slice_axis(spacing, sided, axis):
    chosen, why = choose_slice_axis(spacing, sided)
    assert chosen == axis
    assert ("axial", "coronal", "sagittal")[2 - axis] in why


def test_2d_slices_of_side_labelled_data_keep_both_sides_in_plane(tmp_path):
    """Thick sagittal slices (coarsest left-right) with "left"/"right" labels: the 2D
    configuration still sees left and right in one slice."""
    root = write_decathlon(tmp_path / "ds", n_cases=3, shape=(12, 40, 40),
                           spacing=(4.0, 0.8, 0.8))  # labels "left" and "right"
    ds = load_dataset(root)
    config = plan_dataset(ds, compute_fingerprint(ds, progress=False)).configuration("2d")
    assert config.slice_axis != 0
    assert config.spacing[0] == pytest.approx(4.0)  # left-right stays in plane
    assert "body side" in config.reasons["slice_axis"]
