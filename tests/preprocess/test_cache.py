"""The preprocessed cache: layout, memory maps, reuse of unchanged cases, invalidation."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest

from medseg.cli.main import main
from medseg.core.errors import DatasetError
from medseg.data import load_dataset
from medseg.io import read_volume
from medseg.preprocess import (
    compute_fingerprint,
    invert_labels,
    open_cache,
    plan_dataset,
    preprocess_dataset,
)
from tests.conftest import HIPPOCAMPUS, requires_shared
from tests.data.synthetic import write_decathlon


@pytest.fixture
def planned(tmp_path):
    ds = load_dataset(write_decathlon(tmp_path / "ds", n_cases=3, n_test=1))
    return ds, plan_dataset(ds, compute_fingerprint(ds, progress=False)), tmp_path / "run"


def mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name != "index.json"}


def test_cache_layout_and_contents(planned):
    ds, plan, run = planned
    summary = preprocess_dataset(ds, plan, run, workers=1, progress=False,
                                 include_test=True)
    assert summary.computed == 4 and not summary.failed
    cache = open_cache(summary.folder)
    assert cache.case_ids == ("case_000", "case_001", "case_002", "case_003")
    image = cache.image("case_000")
    assert isinstance(image, np.memmap) and image.dtype == np.float32
    label = cache.label("case_000")
    assert label.dtype == np.uint8 and label.shape[1:] == image.shape[1:]
    fg = cache.foreground("case_000")
    assert set(fg) == {1, 2}
    for k, coords in fg.items():
        assert coords.dtype == np.int32 and coords.shape[1] == 3
        assert np.all(label[0][tuple(coords.T)] == k)
    assert cache.label("case_003") is None and cache.foreground("case_003") == {}
    assert cache.plan == plan
    src = ds.case("case_000")
    back = invert_labels(label, cache.record("case_000"))
    original = read_volume(src.label)
    assert np.array_equal(back.array, original.array)
    with pytest.raises(DatasetError, match="not in the cache"):
        cache.image("nope")


def test_second_run_recomputes_nothing(planned):
    ds, plan, run = planned
    first = preprocess_dataset(ds, plan, run, workers=1, progress=False)
    before = mtimes(first.folder)
    second = preprocess_dataset(ds, plan, run, workers=1, progress=False)
    assert second.folder == first.folder
    assert second.computed == 0 and second.reused == 3
    assert mtimes(second.folder) == before


def test_plan_change_invalidates_but_network_change_does_not(planned):
    ds, plan, run = planned
    first = preprocess_dataset(ds, plan, run, workers=1, progress=False)
    configs = dict(plan.configurations)
    configs["3d"] = replace(configs["3d"], batch_size=1)
    same = preprocess_dataset(ds, plan.with_changes(configurations=configs), run, workers=1,
                              progress=False)
    assert same.folder == first.folder and same.computed == 0
    coarser = plan.with_changes(target_spacing=(2.0, 2.0, 2.0))
    other = preprocess_dataset(ds, coarser, run, workers=1, progress=False)
    assert other.folder != first.folder and other.computed == 3
    assert open_cache(other.folder).shape("case_000") != open_cache(first.folder).shape(
        "case_000")


def test_changed_input_is_recomputed(planned):
    ds, plan, run = planned
    first = preprocess_dataset(ds, plan, run, workers=1, progress=False)
    label = ds.case("case_001").label
    os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 10**9))
    second = preprocess_dataset(ds, plan, run, workers=1, progress=False)
    assert second.folder != first.folder
    assert second.computed == 1 and second.reused == 2


def test_parallel_workers_match_serial(planned):
    ds, plan, run = planned
    serial = preprocess_dataset(ds, plan, run, workers=1, progress=False)
    parallel = preprocess_dataset(ds, plan, run.parent / "run2", workers=2, progress=False)
    a, b = open_cache(serial.folder), open_cache(parallel.folder)
    for case_id in a.case_ids:
        assert np.array_equal(a.image(case_id), b.image(case_id))


def test_incomplete_cache_is_not_opened(planned):
    ds, plan, run = planned
    summary = preprocess_dataset(ds, plan, run, workers=1, progress=False)
    (summary.folder / "index.json").unlink()
    with pytest.raises(DatasetError, match="no complete preprocessed cache"):
        open_cache(summary.folder)


def test_cli_plan_then_preprocess(tmp_path, capsys):
    root = write_decathlon(tmp_path / "ds", n_cases=3, n_test=0)
    run = tmp_path / "run"
    assert main(["plan", str(root), "--out", str(run)]) == 0
    for name in ("dataset.json", "fingerprint.json", "plan.json"):
        assert (run / name).is_file()
    assert main(["preprocess", str(run), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "computed 3" in out
    assert open_cache(run).case_ids == ("case_000", "case_001", "case_002")
    assert main(["preprocess", str(run), "--workers", "1"]) == 0
    assert "computed 0, reused 3" in capsys.readouterr().out


def test_cli_plan_strict_fails_on_bad_case(tmp_path, capsys):
    root = write_decathlon(tmp_path / "ds", n_cases=2, n_test=0)
    meta = json.loads((root / "dataset.json").read_text())
    del meta["training"][1]["label"]
    (root / "dataset.json").write_text(json.dumps(meta))
    assert main(["plan", str(root), "--out", str(tmp_path / "run"), "--strict"]) == 2
    assert "missing label" in capsys.readouterr().err
    assert main(["plan", str(root), "--out", str(tmp_path / "run")]) == 0
    assert "excluded case_001: missing label" in capsys.readouterr().out


@requires_shared
@pytest.mark.slow
def test_hippocampus_cases_round_trip_exactly(tmp_path):
    full = load_dataset(HIPPOCAMPUS)
    ds = full.with_cases(full.cases[:6])
    plan = plan_dataset(ds, compute_fingerprint(ds, progress=False))
    summary = preprocess_dataset(ds, plan, tmp_path / "run", workers=2, progress=False)
    assert summary.computed == 6 and not summary.failed
    cache = open_cache(summary.folder)
    for case in ds.cases:
        original = read_volume(case.label)
        back = invert_labels(cache.label(case.case_id), cache.record(case.case_id))
        assert np.array_equal(back.array, original.array)
        assert np.allclose(back.affine, original.affine, atol=1e-6)


def test_interrupted_run_resumes_with_the_missing_cases(planned):
    ds, plan, run = planned
    first = preprocess_dataset(ds, plan, run, workers=1, progress=False)
    (first.folder / "index.json").unlink()  # as if killed before the end
    (first.folder / "case_002.json").unlink()  # ... while writing case_002
    again = preprocess_dataset(ds, plan, run, workers=1, progress=False)
    assert again.folder == first.folder
    assert again.computed == 1 and again.reused == 2
    assert open_cache(again.folder).case_ids == ("case_000", "case_001", "case_002")


def test_prune_keeps_the_current_cache_and_counts_only_unshared_bytes(planned):
    from medseg.preprocess.prune import prune_caches

    ds, plan, run = planned
    old = preprocess_dataset(ds, plan, run, workers=1, progress=False).folder
    label = ds.case("case_001").label
    os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 10**9))
    current = preprocess_dataset(ds, plan, run, workers=1, progress=False).folder
    crashed = run / "preprocessed" / "0123456789abcdef"  # an interrupted run: no index.json
    crashed.mkdir()
    (crashed / "case_000.npy").write_bytes(b"x" * 1000)
    plan.save(run / "plan.json")
    # only case_001 (recomputed) and the index of the old cache are not linked from current
    unshared = [p for p in old.iterdir() if p.name.startswith("case_001") or p.name == "index.json"]
    expected = sum(p.stat().st_size for p in unshared) + 1000

    dry = prune_caches(run, dry_run=True)
    assert dry.kept == current.resolve() and set(dry.removed) == {old, crashed}
    assert dry.freed_bytes == expected and old.is_dir() and "would remove 2" in dry.summary()
    done = prune_caches(run)
    assert done.freed_bytes == expected and not old.exists() and not crashed.exists()
    assert open_cache(run).case_ids == ("case_000", "case_001", "case_002")
    assert np.asarray(open_cache(run).image("case_000")).size  # linked data still readable
    assert prune_caches(run).removed == ()


def test_prune_refuses_without_a_current_cache(planned):
    from medseg.preprocess.prune import prune_caches

    ds, plan, run = planned
    preprocess_dataset(ds, plan, run, workers=1, progress=False)
    plan.with_changes(target_spacing=(2.0, 2.0, 2.0)).save(run / "plan.json")
    with pytest.raises(DatasetError, match="no complete cache for the current plan"):
        prune_caches(run)
    assert len(list((run / "preprocessed").iterdir())) == 1


def test_cli_clean_dry_run_then_clean(planned, capsys):
    ds, plan, run = planned
    old = preprocess_dataset(ds, plan, run, workers=1, progress=False).folder
    preprocess_dataset(ds, plan.with_changes(target_spacing=(2.0, 2.0, 2.0)), run, workers=1,
                       progress=False)
    plan.with_changes(target_spacing=(2.0, 2.0, 2.0)).save(run / "plan.json")
    assert main(["clean", str(run), "--dry-run"]) == 0
    assert f"would remove {old}" in capsys.readouterr().out and old.is_dir()
    assert main(["clean", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"removed {old}" in out and "1 stale cache folder(s)" in out and not old.exists()
    assert not (run / ".medseg.lock").exists()
