"""Batch prediction on a Dask LocalCluster: same outputs as local, failures isolated."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from medseg.cli.main import main
from medseg.core.errors import EXIT_PARTIAL, ConfigError, InputError
from medseg.inference.batch import BatchOptions, predict_batch
from medseg.inference.distributed import (
    ModelSpec,
    absolute,
    dask_client,
    gpu_slots,
    import_distributed,
    models_loaded,
    predict_batch_distributed,
    visible_gpus,
)
from medseg.inference.jobs import discover_jobs
from medseg.inference.predictor import Predictor
from medseg.io import read_volume, write_volume

GEOMETRIES = {  # orientation, oblique angles (degrees), spacing
    "ras": ("RAS", (0, 0, 0), (1.0, 1.0, 1.0)),
    "lps": ("LPS", (0, 0, 0), (1.0, 1.5, 2.0)),
    "oblique": ("PIL", (20, 0, -15), (0.9, 1.1, 1.3)),
    "small": ("RAS", (0, 10, 0), (2.0, 2.0, 2.0)),
}


@pytest.fixture
def inputs(tmp_path: Path, volume_factory) -> Path:
    folder = tmp_path / "inputs"
    for i, (name, (orientation, oblique, spacing)) in enumerate(GEOMETRIES.items()):
        volume = volume_factory((14, 12, 10), spacing, orientation, oblique, origin=(i, 2, -3),
                                kind="sphere", seed=i)
        write_volume(volume, folder / f"{name}.nii.gz")
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b this is not a gzip stream")
    return folder


def fail_first_attempts(marker_dir: str) -> None:
    """Run on each worker: the first attempt at every case raises; each attempt adds a
    line to a file named after the case."""
    import medseg.inference.distributed as module

    predict = module.predict_one

    def flaky(predictor, job, out_dir, options):
        marker = Path(marker_dir) / job.name
        first = not marker.exists()
        with marker.open("a") as fh:
            fh.write("attempt\n")
        if first:
            raise RuntimeError("simulated worker trouble")
        return predict(predictor, job, out_dir, options)

    module.predict_one = flaky


def test_missing_dask_is_an_input_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "dask.distributed", None)  # import fails
    with pytest.raises(InputError, match=r"medseg\[distributed\]"):
        import_distributed()


def test_client_needs_exactly_one_of_scheduler_or_workers() -> None:
    for scheduler, workers in ((None, None), ("tcp://localhost:1", 2)):
        with pytest.raises(ConfigError), dask_client(scheduler, workers):
            pass
    with pytest.raises(ConfigError, match="at least 1"), dask_client(None, 0):
        pass


def test_jobs_are_sent_with_absolute_paths(inputs: Path, monkeypatch) -> None:
    monkeypatch.chdir(inputs.parent)
    (job, *_) = discover_jobs([Path(inputs.name)], ["MRI"])
    assert not job.case.images[0].is_absolute()
    sent = absolute(job)
    assert sent.case.images[0] == (inputs / job.case.images[0].name).resolve()
    assert sent.name == job.name and sent.keep_file_name == job.keep_file_name


@pytest.mark.slow
def test_local_cluster_matches_local_prediction_and_isolates_a_corrupt_case(
    run_dir: Path, inputs: Path, tmp_path: Path, capsys
) -> None:
    options = BatchOptions(progress=False)
    predictor = Predictor.load(run_dir, device="cpu")
    jobs = discover_jobs([inputs], ["MRI"])
    local = predict_batch(predictor, jobs, tmp_path / "local", options)

    spec = ModelSpec(run_dir, device="cpu")
    environment = dict(os.environ)
    with dask_client(workers=2) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        remote = predict_batch_distributed(spec, jobs, tmp_path / "dask", options, client)
        loads = client.run(models_loaded)
        (tmp_path / "attempts").mkdir()
        client.run(fail_first_attempts, str(tmp_path / "attempts"))
        retried = predict_batch_distributed(spec, jobs, tmp_path / "retried", options, client)
        attempts = {p.name: len(p.read_text().splitlines())
                    for p in (tmp_path / "attempts").iterdir()}
        # The CLI on this running cluster: skips what exists, same summary table, exit 3.
        (tmp_path / "dask" / "ras.nii.gz").unlink()
        code = main(["predict", "-m", str(run_dir), "-i", str(inputs), "-o",
                     str(tmp_path / "dask"), "--device", "cpu", "--no-progress",
                     "--scheduler", client.scheduler.address])
    assert dict(os.environ) == environment  # the workers' settings stay theirs
    assert set(loads.values()) <= {0, 1} and sum(loads.values()) >= 1  # once per worker

    assert [r.name for r in remote] == [job.name for job in jobs]  # job order kept
    status = {r.name: r.status for r in remote}
    assert status == {r.name: r.status for r in local}
    assert status.pop("broken") == "failed" and set(status.values()) == {"ok"}
    broken = next(r for r in remote if r.name == "broken")
    assert "broken.nii.gz" in (broken.error or "")
    for name in GEOMETRIES:
        ours = read_volume(tmp_path / "dask" / f"{name}.nii.gz")
        theirs = read_volume(tmp_path / "local" / f"{name}.nii.gz")
        np.testing.assert_array_equal(ours.array, theirs.array)
        np.testing.assert_array_equal(ours.affine, theirs.affine)
        assert next(r for r in remote if r.name == name).voxels == \
            next(r for r in local if r.name == name).voxels
    assert sorted(p.name for p in (tmp_path / "dask").iterdir()) == \
        sorted(f"{n}.nii.gz" for n in GEOMETRIES)  # no temporaries, nothing for the failure

    # Every case failed once on a worker: retried exactly once, the good ones succeed.
    assert {r.name: r.status for r in retried} == {r.name: r.status for r in local}
    assert "broken.nii.gz" in (next(r for r in retried if r.name == "broken").error or "")
    assert attempts == {job.name: 2 for job in jobs}

    captured = capsys.readouterr()
    assert code == EXIT_PARTIAL
    assert "medseg: case broken failed" in captured.err
    table = {line.split()[0]: line.split()[1] for line in captured.out.splitlines()[2:]
             if line.split() and line.split()[0] in {*GEOMETRIES, "broken"}}
    assert table == {"ras": "ok", "lps": "skipped", "oblique": "skipped", "small": "skipped",
                     "broken": "failed"}
    np.testing.assert_array_equal(read_volume(tmp_path / "dask" / "ras.nii.gz").array,
                                  read_volume(tmp_path / "local" / "ras.nii.gz").array)


def test_gpu_slots_spread_workers_over_the_visible_gpus(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert visible_gpus() == ["3", "5"]
    assert gpu_slots("cuda", 2) == ["3", "5"] and gpu_slots("auto", 3) == ["3", "5", "3"]
    assert gpu_slots("cuda:1", 2) == [] and gpu_slots("cpu", 2) == []  # left as asked
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-6d1f,MIG-0a2b,-1,7")
    assert visible_gpus() == ["GPU-6d1f", "MIG-0a2b"]  # CUDA stops at an invalid entry
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_slots("auto", 2) == []  # no GPU: the CPU, as before
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    assert gpu_slots("cuda", 4) == ["0", "1", "0", "1"]


@pytest.mark.slow
def test_each_local_worker_sees_its_own_gpu(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # faked: no GPU is touched
    with dask_client(workers=2, gpus=gpu_slots("cuda", 2)) as client:
        seen = client.run(lambda: __import__("os").environ.get("CUDA_VISIBLE_DEVICES"))
        names = {info["name"]: address
                 for address, info in client.scheduler_info()["workers"].items()}
    assert len(seen) == 2 and {seen[names[0]], seen[names[1]]} == {"3", "5"}
