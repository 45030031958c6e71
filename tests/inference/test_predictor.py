"""Predictor: label maps on the source grid, fold ensembling, loading run folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.core.errors import CheckpointError, ConfigError, InputError
from medseg.inference.postprocess import ComponentEvidence
from medseg.inference.predictor import (
    InferenceSettings,
    Predictor,
    find_checkpoints,
    predict_volume,
)
from medseg.inference.sliding_window import cpu_supports_bfloat16, network_dtype
from medseg.io import read_volume
from tests.conftest import sphere_label
from tests.inference.dicom_synth import write_dicom_series
from tests.inference.helpers import threshold_network, tiny_plan, write_run

EXACT = InferenceSettings(amp=False)
SHAPE = (20, 18, 16)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _threshold_predictor(spacing=(1.0, 1.0, 1.0), config="3d", settings=EXACT, labels=None):
    plan = tiny_plan(spacing, labels)
    return Predictor(plan, config, [threshold_network(3 if config == "3d" else 2)],
                     settings=settings)


@pytest.mark.parametrize(
    ("orientation", "oblique", "spacing"),
    [("RAS", (0, 0, 0), (1, 1, 1)), ("LPS", (0, 0, 0), (1.0, 1.5, 2.0)),
     ("PIR", (0, 0, 0), (0.8, 1.0, 1.2)), ("LAS", (15, -10, 30), (1.0, 1.0, 1.5))],
)
@pytest.mark.parametrize("target", [(1.0, 1.0, 1.0), (1.3, 1.3, 1.3)])
def test_label_map_lies_on_the_input_grid(volume_factory, orientation, oblique, spacing, target):
    volume = volume_factory(SHAPE, spacing, orientation, oblique, origin=(3, -7, 11),
                            kind="sphere")
    labels = predict_volume(_threshold_predictor(target), volume)
    assert labels.spatial_shape == volume.spatial_shape
    np.testing.assert_array_equal(labels.affine, volume.affine)
    assert labels.dtype == np.uint8 and labels.meta["case"] == volume.meta["case"]
    assert _dice(labels.array[0] == 1, sphere_label(SHAPE) == 1) > 0.9


def test_2d_configuration_predicts_slice_by_slice(volume_factory):
    volume = volume_factory(SHAPE, (1.0, 1.2, 0.9), "LPS", kind="sphere")
    labels = predict_volume(_threshold_predictor(config="2d"), volume)
    assert labels.same_grid(volume)
    assert _dice(labels.array[0] == 1, sphere_label(SHAPE) == 1) > 0.9


def test_oblique_dicom_series_prediction_keeps_its_grid(volume_factory, tmp_path):
    source = volume_factory(SHAPE, (0.7, 0.7, 2.0), "LPS", (12, -8, 25), origin=(-40, 20, 5),
                            kind="sphere")
    image = read_volume(write_dicom_series(source, tmp_path / "series"))
    labels = predict_volume(_threshold_predictor((0.9, 0.9, 1.5)), image)
    np.testing.assert_array_equal(labels.affine, image.affine)
    assert labels.spatial_shape == image.spatial_shape
    assert labels.meta["sop_instance_uids"] == image.meta["sop_instance_uids"]
    assert _dice(labels.array[0] == 1, sphere_label(SHAPE) == 1) > 0.9


def test_label_values_and_probabilities_on_the_source_grid(volume_factory):
    volume = volume_factory(SHAPE, (1.0, 1.5, 2.0), "LPS", kind="sphere")
    predictor = _threshold_predictor(labels={0: "background", 5: "ball"})
    prediction = predictor.predict(volume, with_probabilities=True)
    assert set(np.unique(prediction.labels.array)) == {0, 5}
    probs = prediction.probabilities
    assert probs is not None and probs.shape == (2, *SHAPE)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(np.array([0, 5])[probs.argmax(0)], prediction.labels.array[0])


def test_tta_with_a_flip_equivariant_network_changes_nothing(volume_factory):
    volume = volume_factory(SHAPE, kind="sphere")
    plain = predict_volume(_threshold_predictor(), volume)
    mirrored = predict_volume(_threshold_predictor(settings=InferenceSettings(amp=False, tta=True)),
                              volume)
    np.testing.assert_array_equal(plain.array, mirrored.array)


def test_largest_component_removes_islands(volume_factory):
    volume = volume_factory(SHAPE, kind="sphere")
    array = volume.array.copy()
    array[0, 0:2, 0:2, 0:2] = 100.0  # a bright island far from the ball
    volume = volume.with_array(array)
    kept = predict_volume(_threshold_predictor(), volume)
    assert kept.array[0, 0, 0, 0] == 1
    cleaned = predict_volume(
        _threshold_predictor(settings=InferenceSettings(amp=False, largest_component=True)),
        volume)
    assert cleaned.array[0, 0, 0, 0] == 0
    assert (cleaned.array == 1).sum() == (kept.array == 1).sum() - 8


def test_largest_component_by_default_where_validation_said_it_helps(volume_factory):
    volume = volume_factory(SHAPE, kind="sphere")
    array = volume.array.copy()
    array[0, 0:2, 0:2, 0:2] = 100.0  # a bright island far from the ball
    volume = volume.with_array(array)
    helped = ComponentEvidence(dice=(0.80,), dice_largest=(0.85,), cases=(3,))
    hurt = ComponentEvidence(dice=(0.85,), dice_largest=(0.80,), cases=(3,))

    def island(evidence, settings=EXACT):
        predictor = Predictor(tiny_plan(), "3d", [threshold_network()], settings=settings,
                              evidence=evidence)
        return int(predict_volume(predictor, volume).array[0, 0, 0, 0])

    assert island(helped) == 0  # removed: the default follows the evidence
    assert island(hurt) == 1 and island(None) == 1
    assert island(helped, InferenceSettings(amp=False, largest_component=False)) == 1
    assert island(hurt, InferenceSettings(amp=False, largest_component=True)) == 0


def test_run_folder_pools_the_folds_postprocessing_evidence(tmp_path):
    plan = tiny_plan()
    gains = [ComponentEvidence((0.6,), (0.7,), (2,)), ComponentEvidence((0.7,), (0.72,), (3,))]
    write_run(tmp_path / "run", plan, folds=[0, 1],
              postprocessing=[e.to_dict() for e in gains])
    ensemble = Predictor.load(tmp_path / "run", settings=EXACT)
    assert ensemble.component_classes == (1,)
    assert "largest component only: ball" in ensemble.describe()
    write_run(tmp_path / "old", plan, folds=[0])  # a checkpoint without the record
    assert Predictor.load(tmp_path / "old", settings=EXACT).component_classes == ()


def test_run_folder_ensembles_all_folds(tmp_path, volume_factory):
    plan = tiny_plan()
    write_run(tmp_path / "run", plan, folds=[0, 1])
    ensemble = Predictor.load(tmp_path / "run", settings=EXACT)
    assert len(ensemble.networks) == 2 and ensemble.config == "3d"
    singles = [Predictor.load(tmp_path / "run", folds=[f], settings=EXACT) for f in (0, 1)]
    image = ensemble.preprocess(volume_factory(SHAPE, kind="sphere")).image
    expected = (singles[0].probabilities(image) + singles[1].probabilities(image)) / 2
    np.testing.assert_allclose(ensemble.probabilities(image), expected, atol=1e-6)


def test_find_checkpoints_accepts_every_model_path(tmp_path):
    paths = write_run(tmp_path / "run", tiny_plan(), folds=[0, 1])
    assert find_checkpoints(tmp_path / "run") == paths
    assert find_checkpoints(tmp_path / "run" / "train" / "3d") == paths
    assert find_checkpoints(paths[1].parent) == [paths[1]]
    assert find_checkpoints(paths[0]) == [paths[0]]
    assert find_checkpoints(tmp_path / "run", folds=["1"]) == [paths[1]]
    single = Predictor.load(paths[0])
    assert len(single.networks) == 1 and single.plan.labels == tiny_plan().labels


def test_model_errors_name_the_problem(tmp_path):
    write_run(tmp_path / "run", tiny_plan(), folds=[0])
    with pytest.raises(ConfigError, match="fold_3"):
        find_checkpoints(tmp_path / "run", folds=[3])
    with pytest.raises(ConfigError, match="2d"):
        find_checkpoints(tmp_path / "run", config="2d")
    with pytest.raises(CheckpointError, match="not found"):
        find_checkpoints(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no trained fold"):
        find_checkpoints(tmp_path / "empty")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        Predictor.load(tmp_path / "junk.pt")


def test_wrong_channel_count_is_an_input_error(volume_factory):
    volume = volume_factory(SHAPE, channels=2, kind="sphere")
    with pytest.raises(InputError, match="2 channel"):
        predict_volume(_threshold_predictor(), volume)


def test_mixed_precision_predictor_agrees_with_float32(volume_factory):
    volume = volume_factory(SHAPE, (1.0, 1.5, 2.0), "LPS", kind="sphere")
    exact = predict_volume(_threshold_predictor(), volume)
    mixed_predictor = _threshold_predictor(settings=InferenceSettings(amp=True))
    if cpu_supports_bfloat16():
        assert network_dtype(mixed_predictor.networks[0]) == torch.bfloat16
    mixed = predict_volume(mixed_predictor, volume)
    assert _dice(mixed.array[0] == 1, exact.array[0] == 1) > 0.99
