"""Slab-by-slab inversion equals the whole-volume inversion (``invert_probabilities``,
torch trilinear on the full grid) for resampling in every axis, crops and oblique,
permuted/flipped sources; slab size never changes the result."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.core.errors import GeometryError
from medseg.preprocess import Plan, invert_labels, invert_probabilities, preprocess_case
from medseg.preprocess.invert_chunks import (
    background_fill,
    inverse_map,
    invert_argmax,
    invert_map,
    invert_slabs,
)
from tests.data.synthetic import case_volumes


def make_plan(spacing, n_classes=3) -> Plan:
    labels = {0: "background", **{k: f"c{k}" for k in range(1, n_classes)}}
    return Plan(dataset_name="synthetic", labels=labels, channels={0: "MRI"},
                target_spacing=tuple(spacing), normalization=({"scheme": "zscore_nonzero"},))


def smooth_probs(shape, n_classes, seed=0) -> np.ndarray:
    """Softmax of smooth random fields: distinct classes win in different regions."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    logits = []
    for _ in range(n_classes):
        w = rng.normal(size=(3, 3))
        logits.append(sum(np.sin(3 * w[a, 0] * g + w[a, 1]) * w[a, 2]
                          for a, g in enumerate(grids)))
    logits = np.stack(logits) * 4
    e = np.exp(logits - logits.max(0))
    return (e / e.sum(0)).astype(np.float32)


CASES = [  # source shape, source spacing, orientation, oblique angles, plan spacing
    ((30, 26, 14), (1.0, 1.0, 1.0), "RAS", (0, 0, 0), (0.5, 1.0, 1.0)),     # x up
    ((30, 26, 14), (1.0, 1.0, 1.0), "RAS", (0, 0, 0), (1.0, 2.5, 1.0)),     # y down
    ((30, 26, 14), (1.0, 1.0, 1.0), "RAS", (0, 0, 0), (1.0, 1.0, 0.4)),     # z up
    ((40, 36, 12), (0.7, 0.7, 3.0), "LPS", (0, 0, 0), (1.9, 1.9, 1.1)),     # anisotropic
    ((34, 30, 16), (0.9, 1.3, 2.2), "PIR", (12, -7, 20), (1.0, 1.0, 1.0)),  # oblique, permuted
    ((28, 32, 18), (1.1, 0.8, 2.0), "LIP", (8, 15, -5), (2.3, 0.6, 1.7)),   # mixed up/down
]


@pytest.mark.parametrize("shape,spacing,orientation,oblique,target", CASES)
@pytest.mark.parametrize("slab", [1, 5, 64])
def test_chunked_equals_whole_volume(shape, spacing, orientation, oblique, target, slab):
    image, _ = case_volumes(shape=shape, spacing=spacing, orientation=orientation,
                            oblique_degrees=oblique)
    pre = preprocess_case(image, None, make_plan(target, n_classes=4))
    assert pre.record["steps"][-1]["identity"] is False
    assert pre.record["steps"][1]["bbox"] != [[0, n] for n in pre.record["steps"][1]
                                              ["shape_before"]]  # the crop is exercised
    probs = smooth_probs(pre.record["shape"], 4)
    whole = invert_probabilities(probs, pre.record)
    chunked = invert_map(probs, pre.record, fill=background_fill(4), slab=slab)
    assert chunked.shape == whole.shape == (4, *shape)
    np.testing.assert_allclose(chunked, whole, atol=2e-6)
    values = np.asarray(pre.record["label_values"])
    labels = invert_argmax(probs, pre.record, slab=slab)
    assert labels.dtype == np.uint8
    assert np.array_equal(labels, values[whole.argmax(0)])


def test_float16_input_and_output_and_memmap(tmp_path):
    image, _ = case_volumes(shape=(30, 22, 12), spacing=(0.8, 0.8, 2.5), orientation="LPS")
    pre = preprocess_case(image, None, make_plan((1.5, 1.5, 1.5)))
    probs = smooth_probs(pre.record["shape"], 3)
    whole = invert_probabilities(probs, pre.record)
    out = np.lib.format.open_memmap(tmp_path / "p.npy", "w+", np.float16, (3, 30, 22, 12))
    got = invert_map(probs.astype(np.float16), pre.record, dtype=np.float16,
                     fill=background_fill(3), slab=4, out=out)
    assert got is out and got.dtype == np.float16
    np.testing.assert_allclose(got, whole, atol=2e-3)  # float16 in and out


def test_single_channel_map_fill_outside_crop():
    """A 1-channel map (e.g. entropy) gets its own fill where the crop removed voxels."""
    image, _ = case_volumes(shape=(24, 20, 10), spacing=(1.0, 1.0, 2.0), orientation="RAS")
    pre = preprocess_case(image, None, make_plan((2.0, 2.0, 2.0)))
    ones = np.ones((1, *pre.record["shape"]), dtype=np.float32)
    back = invert_map(ones, pre.record, fill=-1.0, slab=3)
    bbox = pre.record["steps"][1]["bbox"]
    inside = np.zeros((24, 20, 10), bool)
    inside[tuple(slice(lo, hi) for lo, hi in bbox)] = True  # RAS source: same axes
    assert np.all(back[0][inside] == 1.0) and np.all(back[0][~inside] == -1.0)


def test_without_resampling_the_map_is_an_exact_index_move():
    spacing = (0.8, 1.2, 2.0)
    image, _ = case_volumes(spacing=spacing, orientation="PIR", oblique_degrees=(12, -7, 20))
    probe = preprocess_case(image, None, make_plan((1, 1, 1)))
    pre = preprocess_case(image, None, make_plan(probe.record["steps"][-1]["spacing_before"]))
    assert pre.record["steps"][-1]["identity"] is True
    imap = inverse_map(pre.record)
    assert all(ax.exact for ax in imap.axes)
    probs = smooth_probs(pre.record["shape"], 3)
    np.testing.assert_array_equal(invert_map(probs, pre.record, fill=background_fill(3)),
                                  invert_probabilities(probs, pre.record))


def test_invert_labels_equals_the_whole_volume_one_hot_inversion():
    image, label = case_volumes(shape=(40, 36, 14), spacing=(1.2, 1.0, 3.0), orientation="LIP",
                                oblique_degrees=(8, 15, -5))
    pre = preprocess_case(image, label, make_plan((1.0, 1.0, 1.0)))
    onehot = np.stack([pre.label[0] == k for k in range(3)]).astype(np.float32)
    reference = invert_probabilities(onehot, pre.record).argmax(0)
    back = invert_labels(pre.label, pre.record)
    assert np.array_equal(back.array[0], reference)
    assert np.array_equal(back.affine, label.affine)


def test_slabs_cover_the_last_axis_once():
    image, _ = case_volumes(shape=(20, 18, 11), spacing=(1.0, 1.0, 2.0), orientation="LPS")
    pre = preprocess_case(image, None, make_plan((1.5, 1.5, 1.5)))
    probs = smooth_probs(pre.record["shape"], 3)
    ks = [k for k, _ in invert_slabs(probs, pre.record, slab=4)]
    assert ks == [slice(0, 4), slice(4, 8), slice(8, 11)]


def test_wrong_shape_is_refused():
    image, _ = case_volumes(shape=(20, 18, 11), spacing=(1.0, 1.0, 2.0))
    pre = preprocess_case(image, None, make_plan((1.5, 1.5, 1.5)))
    with pytest.raises(GeometryError, match="preprocessed grid"):
        invert_map(np.zeros((2, 3, 3, 3), np.float32), pre.record)
