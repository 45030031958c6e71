"""Whole-process measurements for benchmarks that run other programs: wall time and the
peak resident memory of the process *tree* (a program's worker processes count: nnU-Net
predicts and exports in spawned pools), sampled every 50 ms with psutil.

The peak is the largest sum of the tree's RSS at one sample (pages shared between the
processes are counted once per process, as ``ps`` would); short spikes between samples
can be missed, equally on both sides of a comparison.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

SAMPLE_SECONDS = 0.05


@dataclass(frozen=True)
class Measured:
    """One run: seconds, peak tree RSS (GiB), exit code and the tail of its output."""

    seconds: float
    peak_rss_gb: float
    returncode: int
    tail: str


def run_measured(cmd: Sequence[str], env: Mapping[str, str] | None = None,
                 cwd: Path | None = None) -> Measured:
    """Run ``cmd`` to completion; its wall time and peak process-tree RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(list(cmd), env=dict(env) if env is not None else None, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]
    done = threading.Event()
    sampler = threading.Thread(target=_sample, args=(proc.pid, peak, done), daemon=True)
    sampler.start()
    output = proc.communicate()[0]
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    return Measured(seconds, peak[0] / 1024**3, proc.returncode, output[-3000:])


def _sample(pid: int, peak: list[int], done: threading.Event) -> None:
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    while not done.is_set():
        total = 0
        try:
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    total += p.memory_info().rss
        except psutil.NoSuchProcess:
            return
        peak[0] = max(peak[0], total)
        time.sleep(SAMPLE_SECONDS)


def machine() -> dict[str, object]:
    """What the figures were measured on (and how busy it was)."""
    return {"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()],
            "ram_gb": round(psutil.virtual_memory().total / 1024**3, 1)}
