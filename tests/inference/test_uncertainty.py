"""Uncertainty maps and scores: extreme values, an independent entropy reference, the same
labels as plain prediction, invariance to the order of the members, files written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import softmax
from scipy.stats import entropy

from medseg.cli.main import main
from medseg.core import Volume, sidecars
from medseg.core.errors import EXIT_OK, ConfigError
from medseg.inference.predictor import InferenceSettings, Predictor
from medseg.inference.uncertainty import (
    EnsembleAccumulator,
    class_scores,
    ensemble,
    normalized_entropy,
    to_source_grid,
)
from medseg.io import read_volume, write_volume
from medseg.metrics.cases import match_cases
from medseg.preprocess import Plan, preprocess_case
from tests.conftest import make_affine, sphere_label

K = 3
SHAPE = (4, 5, 6)


def _one_hot(classes: np.ndarray, k: int = K) -> np.ndarray:
    return np.moveaxis(np.eye(k, dtype=np.float32)[classes], -1, 0)


def _members(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Random member probabilities with three regions: certain agreement in x = 0,
    uniform in x = 1, certain but different classes (member m says class m % K) in x = 2."""
    members = []
    for m in range(n):
        p = softmax(rng.normal(0, 2, (K, *SHAPE)), axis=0).astype(np.float32)
        p[:, 0] = _one_hot(np.full(SHAPE[1:], 1))
        p[:, 1] = 1.0 / K
        p[:, 2] = _one_hot(np.full(SHAPE[1:], m % K))
        members.append(p)
    return members


def _accumulate(members: list[np.ndarray], mirrorings: int = 1):
    acc = EnsembleAccumulator(mirrorings)
    for p in members:
        acc.add_member(p)
    return acc.result()


def test_entropy_is_zero_where_members_agree_with_probability_one_and_one_where_uniform():
    result = _accumulate(_members(np.random.default_rng(0), 3))
    np.testing.assert_array_equal(result.entropy[0], 0.0)
    np.testing.assert_allclose(result.entropy[1], 1.0, atol=1e-6)
    assert result.entropy.min() >= 0.0 and result.entropy.max() <= 1.0
    # Disagreement: none where members agree (confidently or not), maximal where three
    # members are each certain of a different one of the three classes.
    assert result.disagreement is not None
    np.testing.assert_array_equal(result.disagreement[0], 0.0)
    np.testing.assert_allclose(result.disagreement[1], 0.0, atol=1e-6)
    np.testing.assert_allclose(result.disagreement[2], 1.0, atol=1e-6)
    np.testing.assert_allclose(result.entropy[2], 1.0, atol=1e-6)


@pytest.mark.parametrize("mirrorings", [1, 2])
def test_maps_match_an_independent_entropy_computation(mirrorings):
    members = _members(np.random.default_rng(1), 2 * mirrorings)
    result = _accumulate(members, mirrorings)
    folds = [members[f * mirrorings:(f + 1) * mirrorings] for f in range(2)]
    # Mirrorings of a fold average as logits, i.e. as log-probabilities; folds as probabilities.
    expected = np.mean([softmax(np.mean(np.log(np.maximum(f, 1e-30)), axis=0), axis=0)
                        for f in folds], axis=0)
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)
    np.testing.assert_allclose(result.entropy, entropy(expected, axis=0) / np.log(K), atol=1e-5)
    mutual_information = (entropy(np.mean(members, axis=0), axis=0)
                          - np.mean([entropy(p, axis=0) for p in members], axis=0)) / np.log(K)
    assert result.disagreement is not None
    np.testing.assert_allclose(result.disagreement, mutual_information, atol=1e-5)


def test_a_single_member_has_entropy_but_no_disagreement():
    result = _accumulate(_members(np.random.default_rng(2), 1))
    assert result.disagreement is None and result.members == 1
    np.testing.assert_allclose(normalized_entropy(np.full((4, 2, 2, 2), 0.25)), 1.0, atol=1e-6)


def test_member_order_does_not_change_maps_or_scores():
    members = _members(np.random.default_rng(3), 4)
    forward, backward = _accumulate(members), _accumulate(members[::-1])
    np.testing.assert_allclose(forward.entropy, backward.entropy, atol=1e-6)
    np.testing.assert_allclose(forward.disagreement, backward.disagreement, atol=1e-6)
    scores = [class_scores(r.probabilities, r.entropy, [0, 1, 2]) for r in (forward, backward)]
    for value in (1, 2):
        assert scores[0][value]["score"] == pytest.approx(scores[1][value]["score"], abs=1e-6)


def test_class_scores_count_the_first_and_second_most_likely_class():
    # Five voxels along z: certain 1, certain 0, a 0/1 tie zone, a 0/2 tie zone, background
    # with a remote chance of 1.
    probs = np.zeros((3, 1, 1, 5), dtype=np.float32)
    probs[:, 0, 0, 0] = [0, 1, 0]
    probs[:, 0, 0, 1] = [1, 0, 0]
    probs[:, 0, 0, 2] = [0.4, 0.6, 0.0]
    probs[:, 0, 0, 3] = [0.6, 0.0, 0.4]
    probs[:, 0, 0, 4] = [0.9, 0.1, 0.0]
    h = (entropy(probs, axis=0) / np.log(3)).astype(np.float32)[0, 0]
    scores = class_scores(probs, h[None, None], [0, 1, 2])
    assert scores[1]["predicted"] == 2 and scores[2]["predicted"] == 0
    u1 = h[2] + h[4] * 0.1 / 0.9  # runner-up voxels count by p_c / p_top
    u2 = h[3] * 0.4 / 0.6
    assert scores[1]["uncertain"] == pytest.approx(u1)
    assert scores[2]["uncertain"] == pytest.approx(u2)
    assert scores[1]["score"] == pytest.approx(u1 / (2 * 2 + u1))
    assert scores[2]["score"] == pytest.approx(1.0)  # uncertain but never predicted
    # As if calibrated: class 1 has TP 1 + 0.6, FP 0.4, FN 0.1; class 2 TP 0, FN 0.4.
    assert scores[1]["expected_dice_loss"] == pytest.approx(1 - 3.2 / 3.7)
    assert scores[2]["expected_dice_loss"] == pytest.approx(1.0)
    assert scores[1]["mean_entropy_predicted"] == pytest.approx(h[2] / 2)


def test_maps_return_to_the_source_grid_with_zero_outside_the_crop():
    plan = Plan(dataset_name="s", labels={0: "bg", 1: "fg"}, channels={0: "MRI"},
                target_spacing=(1.0, 1.0, 1.0), normalization=({"scheme": "zscore_nonzero"},))
    arr = np.zeros((1, 12, 10, 8), dtype=np.float32)
    arr[0, 3:9, 2:8, 1:6] = np.random.default_rng(0).uniform(1, 2, (6, 6, 5))
    image = Volume(arr, make_affine((1.0, 1.0, 1.0), "LPS", (10, 0, 5)))
    pre = preprocess_case(image, None, plan)
    values = np.random.default_rng(1).uniform(0, 1, pre.image.shape[1:]).astype(np.float32)
    back = to_source_grid(values, pre.record)
    assert back.shape == image.spatial_shape
    inside = np.zeros(image.spatial_shape, dtype=bool)
    inside[3:9, 2:8, 1:6] = True
    assert (back[~inside] == 0).all()
    # No resampling: every value lands on one voxel, unchanged.
    np.testing.assert_allclose(np.sort(back[inside]), np.sort(values.ravel()), atol=1e-6)


def test_mirror_ensemble_gives_the_probabilities_and_labels_of_plain_prediction(
        run_dir, volume_factory):
    predictor = Predictor.load(run_dir, folds=[0], settings=InferenceSettings(amp=False,
                                                                              tta=True))
    volume = volume_factory((10, 8, 8), (1.0, 1.0, 1.0), "LPS", kind="sphere")
    pre = predictor.preprocess(volume)
    result = ensemble(predictor, pre.image)
    plain = predictor.probabilities(pre.image)
    assert (result.folds, result.mirrorings) == (1, 8) and result.disagreement is not None
    np.testing.assert_allclose(result.probabilities, plain, atol=1e-5)
    np.testing.assert_array_equal(
        predictor.from_probabilities(volume, pre, result.probabilities).labels.array,
        predictor.from_probabilities(volume, pre, plain).labels.array)


def test_predict_cli_writes_maps_and_scores_next_to_labels(run_dir, volume_factory, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    volume = volume_factory((10, 9, 8), (1.0, 1.0, 2.0), "RAS", kind="sphere")
    write_volume(volume, inputs / "case_a.nii.gz")
    args = ["predict", "-m", str(run_dir), "-i", str(inputs), "-o", str(out), "--device",
            "cpu", "--no-progress", "--uncertainty"]
    assert main(args) == EXIT_OK
    uncertainty = read_volume(sidecars.uncertainty_map_path(out, "case_a"))
    assert uncertainty.same_grid(volume) and uncertainty.array.dtype == np.float32
    assert uncertainty.array.min() >= 0.0 and uncertainty.array.max() <= 1.0
    assert sidecars.disagreement_map_path(out, "case_a").is_file()  # two folds
    score = json.loads(sidecars.uncertainty_score_path(out, "case_a").read_text())
    assert score["case"] == "case_a" and score["folds"] == 2 and "1" in score["per_label"]
    # Evaluation pairs only the label map with the reference, not the sidecars.
    refs = tmp_path / "refs"
    write_volume(volume.with_array(sphere_label(volume.spatial_shape)[None]),
                 refs / "case_a.nii.gz")
    pairs = match_cases(out, refs)
    assert [p[0] for p in pairs.pairs] == ["case_a"] and not pairs.unmatched_predictions
    # A label map without its score file is predicted again when uncertainty is asked for.
    sidecars.uncertainty_score_path(out, "case_a").unlink()
    assert main(args) == EXIT_OK
    assert sidecars.uncertainty_score_path(out, "case_a").is_file()



def test_models_with_their_own_probabilities_are_refused(run_dir):
    class OwnWay(Predictor):
        def probabilities(self, image: np.ndarray) -> np.ndarray:
            return super().probabilities(image)

    base = Predictor.load(run_dir, folds=[0])
    own = OwnWay(base.plan, base.config, base.networks)
    with pytest.raises(ConfigError, match="not available for this model"):
        ensemble(own, np.zeros((1, 8, 8, 8), dtype=np.float32))
