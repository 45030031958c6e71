"""Agreement of medseg's RTSTRUCT reading and writing with independent rasterisers, on the
real LUNG1-001 CT and its clinical structure set (NSCLC-Radiomics).

    python benchmarks/rtstruct_agreement.py [--root ../shared/data/dicom/ct_lung_rtstruct/LUNG1-001]
                                            [--repeats 3]

1. read: ``read_annotation(RTSTRUCT/1-1.dcm)`` (the CT found in the folder tree) against
   ``reference_labels_independent_rasterizer.nii.gz`` shipped beside it (another converter,
   even-odd fill at voxel centres, GTV-1 painted last): Dice and differing voxels per
   structure;
2. round trip: that reference label map written with ``write_rtstruct`` and read back by the
   independent point-in-polygon rasteriser of ``tests/io/even_odd.py`` (no medseg code):
   Dice per structure; and whether medseg's own reader gives the label map back exactly;
3. dciodvfy (dicom3tools) error count on the RTSTRUCT and on a DICOM-SEG of the same map;
4. times (medians over ``--repeats``): reading the structure set onto the CT (CT already in
   memory), writing the RTSTRUCT, reading the CT series itself for scale.

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the independent rasteriser lives with the tests

from medseg.io import read_annotation, read_volume  # noqa: E402
from medseg.io.dicom_seg import write_dicom_seg  # noqa: E402
from medseg.io.rtstruct_write import write_rtstruct  # noqa: E402
from tests.io.even_odd import dice, rasterize  # noqa: E402

DEFAULT = ROOT.parent / "shared" / "data" / "dicom" / "ct_lung_rtstruct" / "LUNG1-001"
STRUCTURES = {1: "Lung-Left", 2: "Lung-Right", 3: "Spinal-Cord", 4: "GTV-1"}


def timed(fn, repeats: int):
    """(result of the last call, median seconds)."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def dciodvfy_errors(path: Path) -> int | None:
    tool = shutil.which("dciodvfy")
    if tool is None:
        return None
    run = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    return sum(line.startswith("Error") for line in (run.stdout + run.stderr).splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rtstruct = args.root / "RTSTRUCT" / "1-1.dcm"
    ct, ct_s = timed(lambda: read_volume(args.root / "CT"), args.repeats)
    reference = ct.with_array(
        read_volume(args.root / "reference_labels_independent_rasterizer.nii.gz").array)
    read, read_s = timed(lambda: read_annotation(rtstruct, ct, structures=STRUCTURES),
                         args.repeats)
    found = read_annotation(rtstruct, structures=STRUCTURES)  # the CT found in the tree
    assert np.array_equal(found.labels.array, read.labels.array)
    result = {"benchmark": "rtstruct_agreement", "case": args.root.name, "read": {},
              "round_trip": {}}
    for value, name in STRUCTURES.items():
        ours, theirs = read.labels.array[0] == value, reference.array[0] == value
        result["read"][name] = {"dice": round(dice(ours, theirs), 6),
                                "voxels": int(theirs.sum()),
                                "differing": int((ours != theirs).sum())}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rs.dcm"
        names = {0: "background", **STRUCTURES}
        _, write_s = timed(lambda: write_rtstruct(reference, out, names), args.repeats)
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in ct.meta["dicom_files"]]
        drawn = rasterize(pydicom.dcmread(out), headers)
        for value, name in STRUCTURES.items():
            theirs = reference.array[0] == value
            result["round_trip"][name] = {"dice": round(dice(drawn[name], theirs), 6),
                                          "differing": int((drawn[name] != theirs).sum())}
        back = read_annotation(out, ct, overlap="later")
        result["round_trip_exact_with_medseg_reader"] = bool(
            np.array_equal(back.labels.array, reference.array))
        ds = pydicom.dcmread(out)
        result["rtstruct"] = {
            "bytes": out.stat().st_size,
            "contours": sum(len(r.get("ContourSequence", [])) for r in ds.ROIContourSequence),
            "points": sum(int(c.NumberOfContourPoints) for r in ds.ROIContourSequence
                          for c in r.get("ContourSequence", []))}
        seg = Path(tmp) / "seg.dcm"
        write_dicom_seg(reference, seg, names)
        result["dciodvfy_errors"] = {"rtstruct": dciodvfy_errors(out),
                                     "dicom_seg": dciodvfy_errors(seg)}
    result["seconds"] = {"read_ct_series": round(ct_s, 3),
                         "read_rtstruct_onto_ct": round(read_s, 3),
                         "write_rtstruct": round(write_s, 3)}
    result["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                         "load_average": [round(x, 1) for x in os.getloadavg()],
                         "repeats": args.repeats}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
