"""RAM budget: estimates from headers, the resource ladder, refusing too small a budget
before any work, ``--estimate`` without running the network, the on-disk accumulator and
streamed probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.cli.main import main
from medseg.core import Volume
from medseg.core.errors import EXIT_BAD_INPUT, EXIT_OK, ConfigError
from medseg.inference import batch as batch_module
from medseg.inference import sliding_window
from medseg.inference.memory import GB, CaseResources, parse_gb, plan_case, workload
from medseg.inference.predictor import Predictor
from medseg.inference.sliding_window import (
    Accumulator,
    count_windows,
    predict_probabilities,
    window_slices,
)
from medseg.io import read_volume, write_volume
from medseg.io.header_info import read_geometry
from medseg.preprocess import invert_probabilities
from tests.inference.helpers import tiny_plan, write_run

SPACING = (0.7, 0.7, 2.0)  # resampled to the tiny plan's 1 mm: inversion interpolates


@pytest.fixture
def resampled_case(tmp_path: Path, volume_factory) -> Path:
    volume = volume_factory((40, 36, 12), SPACING, "LPS", (0, 0, 0), kind="sphere", seed=1)
    path = tmp_path / "in" / "case.nii.gz"
    write_volume(volume, path)
    return path


@pytest.fixture
def model(tmp_path: Path) -> Path:
    write_run(tmp_path / "run", tiny_plan(), folds=[0])
    return tmp_path / "run"


def _predict(*args: str | Path) -> int:
    return main(["predict", *map(str, args), "--device", "cpu", "--no-progress"])


def test_header_geometry_matches_the_read_volume(resampled_case):
    geometry = read_geometry(resampled_case)
    volume = read_volume(resampled_case)
    assert geometry.shape == volume.spatial_shape
    np.testing.assert_allclose(geometry.affine, volume.affine)
    assert geometry.itemsize == volume.dtype.itemsize


def test_estimated_windows_equal_the_windows_run(model, resampled_case):
    predictor = Predictor.load(model)
    pre = predictor.preprocess(read_volume(resampled_case))
    work = workload(predictor, "case", read_geometry(resampled_case))
    cfg = predictor.plan.configuration("3d")
    run = len(window_slices(pre.image.shape[1:], cfg.patch_size))
    # no crop assumed, so the estimate is an upper bound that is exact without a crop
    assert work.windows >= run == count_windows(pre.image.shape[1:], cfg.patch_size)
    assert all(e >= p for e, p in zip(work.pre_shape, pre.image.shape[1:], strict=True))


def test_smaller_budgets_choose_leaner_resources(model, resampled_case):
    predictor = Predictor.load(model)
    work = workload(predictor, "case", read_geometry(resampled_case))
    roomy = plan_case(work, 100 * GB, base=0)
    assert roomy.resources.accumulator.dtype == torch.float32
    assert not roomy.resources.accumulator.on_disk
    previous = roomy.peak
    for fraction in (0.9, 0.6, 0.4, 0.25):
        budget = int(fraction * roomy.peak)
        try:
            chosen = plan_case(work, budget, base=0)
        except ConfigError:
            break
        assert chosen.peak <= budget and chosen.peak <= previous
        previous = chosen.peak
    with pytest.raises(ConfigError, match=r"needs at least \d+\.\d\d GB"):
        plan_case(work, 1000, base=0)


def test_too_small_max_ram_fails_before_any_work(model, resampled_case, tmp_path, capsys,
                                                 monkeypatch):
    def no_reading(*_args, **_kwargs):
        raise AssertionError("pixels were read")

    monkeypatch.setattr(batch_module, "read_case", no_reading)
    out = tmp_path / "out"
    code = _predict("-m", model, "-i", resampled_case, "-o", out, "--max-ram", "0.05")
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "--max-ram 0.05 GB is too small for case" in err
    needed = float(err.split("needs at least ")[1].split(" GB")[0])
    assert needed > 0.05
    assert not out.exists() or not any(out.iterdir())


def test_estimate_prints_peak_and_windows_without_running_the_network(
        model, resampled_case, tmp_path, capsys, monkeypatch):
    def no_network(*_args, **_kwargs):
        raise AssertionError("the network ran")

    monkeypatch.setattr(sliding_window, "predict_probabilities", no_network)
    monkeypatch.setattr("medseg.inference.predictor.predict_probabilities", no_network)
    code = _predict("-m", model, "-i", resampled_case, "-o", tmp_path / "out", "--estimate")
    assert code == EXIT_OK
    text = capsys.readouterr().out
    predictor = Predictor.load(model)
    windows = workload(predictor, "case", read_geometry(resampled_case)).windows
    assert f"{windows} window(s)" in text and "peak ~" in text
    assert not (tmp_path / "out").exists()


def test_a_2d_model_is_estimated_and_predicted_within_its_estimate(
        tmp_path, resampled_case, capsys):
    """A 2D configuration's window is a slice: its feature maps are sized in 2D (the 3D box of
    the window has a 1 along the slice axis) and the windows counted are the ones run."""
    run = tmp_path / "run2d"
    write_run(run, tiny_plan(), folds=[0], config="2d")
    predictor = Predictor.load(run)
    assert predictor.config == "2d"
    work = workload(predictor, "case", read_geometry(resampled_case))
    cfg = predictor.plan.configuration("2d")
    pre = predictor.preprocess(read_volume(resampled_case))
    assert work.windows == count_windows(pre.image.shape[1:], cfg.patch_size,
                                         slice_axis=cfg.slice_axis)
    assert work.patch_voxels == 8 * 8 and work.activation_bytes_per_window > 0
    assert _predict("-m", run, "-i", resampled_case, "-o", tmp_path / "out", "--estimate") == 0
    assert f"{work.windows} window(s)" in capsys.readouterr().out
    assert _predict("-m", run, "-i", resampled_case, "-o", tmp_path / "out") == EXIT_OK
    out = read_volume(tmp_path / "out" / "case.nii.gz")
    np.testing.assert_allclose(out.affine, read_volume(resampled_case).affine, atol=1e-4)


@pytest.mark.parametrize("text", ["0", "-1", "lots", "nan"])
def test_max_ram_must_be_a_positive_number(text):
    with pytest.raises(ConfigError):
        parse_gb(text)


def test_disk_accumulator_equals_the_ram_accumulator(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 3, 3, padding=1).eval()
    image = np.random.default_rng(0).normal(size=(1, 20, 18, 16)).astype(np.float32)
    ram = predict_probabilities(net, image, (8, 8, 8), amp=False,
                                accumulator=Accumulator(torch.device("cpu"), torch.float16))
    disk = predict_probabilities(net, image, (8, 8, 8), amp=False,
                                 accumulator=Accumulator(torch.device("cpu"), torch.float16,
                                                         True, str(tmp_path)))
    np.testing.assert_array_equal(disk, ram)
    assert list(tmp_path.iterdir()) == []  # the backing file is unlinked at once


def test_budgeted_prediction_equals_the_default(model, resampled_case):
    predictor = Predictor.load(model)
    volume = read_volume(resampled_case)
    default = predictor.predict(volume, with_probabilities=True)
    lean = CaseResources(Accumulator(torch.device("cpu"), torch.float32, True, None), 1, 1)
    budgeted = predictor.predict(volume, with_probabilities=True, resources=lean)
    assert np.array_equal(budgeted.labels.array, default.labels.array)
    # one window per forward instead of two: oneDNN may round a batch of 1 differently
    # (seen on a CPU without AVX-512), by one step of the float16 the probabilities keep
    np.testing.assert_allclose(budgeted.probabilities, default.probabilities, rtol=0,
                               atol=1e-3)


def test_streamed_probabilities_equal_the_whole_volume_inversion(model, resampled_case,
                                                                 tmp_path):
    out = tmp_path / "out"
    assert _predict("-m", model, "-i", resampled_case, "-o", out,
                    "--save-probabilities") == EXIT_OK
    saved = np.load(out / "case_probabilities.npz")
    predictor = Predictor.load(model)
    volume = read_volume(resampled_case)
    pre = predictor.preprocess(volume)
    reference = invert_probabilities(predictor.probabilities(pre.image), pre.record)
    assert saved["probabilities"].dtype == np.float16
    np.testing.assert_allclose(saved["probabilities"], reference, atol=1e-3)
    np.testing.assert_allclose(saved["affine"], volume.affine)
    labels = read_volume(out / "case.nii.gz").array[0]
    assert np.array_equal(labels, reference.argmax(0))


def test_batch_frees_the_source_pixels_after_preprocessing(model, resampled_case):
    from medseg.inference.jobs import discover_jobs

    predictor = Predictor.load(model)
    (job,) = discover_jobs([resampled_case], ["MRI"])
    shell, _pre, _ = batch_module._load(predictor, job)
    assert isinstance(shell, Volume) and shell.array.strides == (0, 0, 0, 0)
    assert shell.spatial_shape == read_volume(resampled_case).spatial_shape
