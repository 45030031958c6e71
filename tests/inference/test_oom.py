"""Out-of-memory retries: fewer windows per pass, host accumulator, CPU; never N failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.inference.batch import BatchOptions, predict_batch
from medseg.inference.jobs import discover_jobs
from medseg.inference.oom import Attempt, attempts, host_copy, is_out_of_memory, run_with_retries
from medseg.inference.predictor import InferenceSettings, Predictor, predict_volume
from medseg.io import read_volume, write_volume
from tests.inference.helpers import threshold_network, tiny_plan

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
SHAPE = (20, 18, 16)  # many 8^3 windows of the tiny plan


def cuda_oom() -> torch.cuda.OutOfMemoryError:
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


class FitsOneWindow(torch.nn.Module):
    """The threshold network, but running out of memory for more than ``limit`` windows at
    once (an injected OOM: the forward raises like CUDA's allocator would)."""

    def __init__(self, limit: int = 1) -> None:
        super().__init__()
        self.conv, self.limit, self.calls = threshold_network(), limit, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise cuda_oom()
        return self.conv(x)


def test_the_ladder_halves_the_batch_then_uses_host_memory_then_the_cpu() -> None:
    assert attempts(4, CUDA) == [Attempt(4, CUDA), Attempt(2, CUDA), Attempt(1, CUDA),
                                 Attempt(1, CUDA, host_accumulator=True),
                                 Attempt(4, CPU, host_accumulator=True)]
    assert attempts(3, CPU) == [Attempt(3, CPU), Attempt(1, CPU)]
    assert attempts(1, CPU) == [Attempt(1, CPU)]


def test_only_out_of_memory_errors_are_recognised() -> None:
    assert is_out_of_memory(cuda_oom())
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] "
                                         "DefaultCPUAllocator: can't allocate memory"))
    assert not is_out_of_memory(RuntimeError("Given groups=1, weight of size [4, 1, 3, 3, 3]"))
    assert not is_out_of_memory(ValueError("out of memory"))  # not an allocation error


def test_a_gpu_case_that_never_fits_ends_on_the_cpu(caplog) -> None:
    tried = []

    def run(attempt: Attempt) -> str:
        tried.append(attempt)
        if attempt.device.type == "cuda":
            raise cuda_oom()
        return "done on the CPU"

    with caplog.at_level("WARNING"):
        assert run_with_retries(run, attempts(2, CUDA), case="ct_001") == "done on the CPU"
    assert tried == attempts(2, CUDA)
    assert caplog.text.count("case ct_001: out of memory") == len(tried) - 1


def test_other_errors_and_the_last_oom_propagate() -> None:
    calls = []

    def shape_error(attempt: Attempt) -> None:
        calls.append(attempt)
        raise RuntimeError("size mismatch")

    with pytest.raises(RuntimeError, match="size mismatch"):
        run_with_retries(shape_error, attempts(4, CUDA))
    assert len(calls) == 1  # not retried

    def always_oom(attempt: Attempt) -> None:
        raise cuda_oom()

    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_with_retries(always_oom, attempts(4, CPU))


def test_predictor_retries_with_fewer_windows_and_gets_the_same_labels(volume_factory) -> None:
    volume = volume_factory(SHAPE, (1.0, 1.5, 2.0), "LPS", kind="sphere")
    settings = InferenceSettings(amp=False, batch_size=4)
    network = FitsOneWindow(limit=1)
    retried = predict_volume(Predictor(tiny_plan(), "3d", [network], settings=settings), volume)
    reference = predict_volume(
        Predictor(tiny_plan(), "3d", [threshold_network()], settings=settings), volume)
    np.testing.assert_array_equal(retried.array, reference.array)
    assert network.calls[:2] == [4, 2] and set(network.calls[2:]) == {1}


def test_batch_prediction_reports_no_failure_for_an_injected_oom(
    tmp_path: Path, volume_factory
) -> None:
    for i in range(3):
        write_volume(volume_factory(SHAPE, kind="sphere", seed=i), tmp_path / "in" / f"c{i}.nii.gz")
    network = FitsOneWindow(limit=2)
    predictor = Predictor(tiny_plan(), "3d", [network],
                          settings=InferenceSettings(amp=False, batch_size=8))
    jobs = discover_jobs([tmp_path / "in"], ["MRI"])
    results = predict_batch(predictor, jobs, tmp_path / "out", BatchOptions(progress=False))
    assert [r.status for r in results] == ["ok"] * 3
    assert read_volume(tmp_path / "out" / "c0.nii.gz").spatial_shape == SHAPE


def test_host_copy_computes_the_same_on_the_cpu() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.InstanceNorm3d(4, affine=True))
    copy = host_copy(net)
    x = torch.randn(1, 1, 6, 6, 6)
    torch.testing.assert_close(copy(x), net(x))
    assert copy is not net and next(copy.parameters()).device.type == "cpu"
