"""nnU-Net v2 model folders for the nnU-Net benchmarks, built with nnU-Net's own code.

    python benchmarks/nnunet_models.py hippocampus [--work DIR] [--iterations 250]
    python benchmarks/nnunet_models.py ct [--work DIR]

``hippocampus``: the shared 208 cases minus 10 held out (every 20th case id, never used
for training) are exported with ``medseg export-nnunet`` as Dataset004, planned and
preprocessed by nnU-Net (3d_fullres), and fold "all" is trained for one epoch of
``--iterations`` iterations on CPU (nnU-Net's trainer). The held-out cases are copied to
``WORK/hippocampus_heldout/``.
``ct``: the LUNG1-001 CT (DICOM, read by medseg, written as NIfTI) with its independently
rasterised reference labels is Dataset005; nnU-Net plans it at a 3 mm target spacing
(like TotalSegmentator's fast CT model) and the 3d_fullres network keeps nnU-Net's
initial (random) weights. ``WORK/ct_input/`` holds the CT as NIfTI for both predictors.
Built folders are reused; each command prints the model folder as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medseg.data import load_dataset  # noqa: E402
from medseg.data.nnunet_export import export_nnunet  # noqa: E402
from medseg.io import read_volume, write_volume  # noqa: E402
from tests.nnunet_builder import build_model_folders  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
DEFAULT_WORK = Path("/tmp/medseg-nnunet-bench")
HIPPO_ID, CT_ID = 4, 5
CT_SERIES = SHARED / "dicom" / "ct_lung_rtstruct" / "LUNG1-001" / "CT"
CT_LABELS = SHARED / "dicom" / "ct_lung_rtstruct" / "LUNG1-001" / \
    "reference_labels_independent_rasterizer.nii.gz"


def heldout_ids(case_ids: list[str]) -> list[str]:
    """Every 20th case (10 of the 208): never seen by the trained model."""
    return sorted(case_ids)[::20][:10]


def build_hippocampus(work: Path, iterations: int) -> dict[str, str]:
    folder = work / "results" / "Dataset004_Hippocampus" / \
        "nnUNetTrainer__nnUNetPlans__3d_fullres"
    heldout = work / "hippocampus_heldout"
    if not (folder / "fold_all" / "checkpoint_final.pth").is_file():
        dataset = load_dataset(SHARED / "hippocampus")
        held = set(heldout_ids([c.case_id for c in dataset.cases]))
        train = dataset.with_cases(tuple(c for c in dataset.cases if c.case_id not in held))
        export_nnunet(train, work / "raw", HIPPO_ID, name="Hippocampus")
        heldout.mkdir(parents=True, exist_ok=True)
        for case in dataset.cases:
            if case.case_id in held:
                shutil.copy(case.images[0], heldout / f"{case.case_id}_0000.nii.gz")
                shutil.copy(case.label, heldout / f"{case.case_id}_label.nii.gz")
        build_model_folders(work, [{"id": HIPPO_ID, "configs": ["3d_fullres"],
                                    "folds": ["all"], "iterations": iterations}],
                            timeout=7200)
    return {"model": str(folder), "inputs": str(heldout)}


def build_ct(work: Path) -> dict[str, str]:
    folder = work / "results" / "Dataset005_LungCT" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    inputs = work / "ct_input"
    if not (folder / "fold_all" / "checkpoint_final.pth").is_file():
        raw = work / "raw" / "Dataset005_LungCT"
        for sub in ("imagesTr", "labelsTr"):
            (raw / sub).mkdir(parents=True, exist_ok=True)
        ct = read_volume(CT_SERIES)
        labels = read_volume(CT_LABELS)
        write_volume(ct, raw / "imagesTr" / "lung001_0000.nii.gz")
        write_volume(labels.with_array(labels.array.astype("uint8")),
                     raw / "labelsTr" / "lung001.nii.gz")
        (raw / "dataset.json").write_text(json.dumps({
            "channel_names": {"0": "CT"}, "numTraining": 1, "file_ending": ".nii.gz",
            "labels": {"background": 0, "Lung-Left": 1, "Lung-Right": 2, "Spinal-Cord": 3,
                       "GTV-1": 4}}))
        inputs.mkdir(parents=True, exist_ok=True)
        shutil.copy(raw / "imagesTr" / "lung001_0000.nii.gz", inputs / "lung001_0000.nii.gz")
        build_model_folders(work, [{"id": CT_ID, "configs": ["3d_fullres"], "folds": ["all"],
                                    "target_spacing": [3.0, 3.0, 3.0]}], timeout=7200)
    return {"model": str(folder), "inputs": str(inputs), "dicom": str(CT_SERIES)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=("hippocampus", "ct"))
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--iterations", type=int, default=250)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    built = build_hippocampus(args.work, args.iterations) if args.task == "hippocampus" \
        else build_ct(args.work)
    print(json.dumps(built))


if __name__ == "__main__":
    main()
