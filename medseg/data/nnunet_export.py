"""Write any dataset medseg can read as an nnU-Net v2 raw dataset.

``export_nnunet(dataset, out_dir, dataset_id)`` reads every case through
:func:`~medseg.data.reading.read_case` (so DICOM studies with mask series, and any layout
``load_dataset`` learns later, export the same way) and writes
``out_dir/DatasetNNN_<name>/`` with ``imagesTr/<case>_<cccc>.nii.gz``,
``labelsTr/<case>.nii.gz`` (label values renumbered to the consecutive 0..K-1 that
nnU-Net requires, in value order), ``imagesTs/`` for the test cases and ``dataset.json``
(``channel_names``, ``labels`` -- regions with ``regions_class_order`` for a region
dataset --, ``numTraining``, ``file_ending``). Every file is written atomically; the
inputs are only read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.core import Volume
from medseg.core.atomic import write_json
from medseg.core.errors import DatasetError, OutputError
from medseg.core.paths import ensure_outside_inputs
from medseg.data.dataset import Case, Dataset
from medseg.data.reading import read_case
from medseg.io import write_volume

FILE_ENDING = ".nii.gz"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ExportSummary:
    """Where the export went and what it holds."""

    folder: Path
    training: int
    test: int
    failed: tuple[tuple[str, str], ...] = ()  # (case id, reason)


def nnunet_folder_name(dataset_id: int, name: str) -> str:
    """``DatasetNNN_<name>`` (nnU-Net ids are 1-999; the name made file-system safe)."""
    if not 1 <= dataset_id <= 999:
        raise OutputError(f"nnU-Net dataset ids are 1..999, got {dataset_id}")
    return f"Dataset{dataset_id:03d}_{_UNSAFE.sub('_', name).strip('_') or 'medseg'}"


def export_nnunet(
    dataset: Dataset, out_dir: str | Path, dataset_id: int, *, name: str | None = None,
    channel_names: Sequence[str] | None = None,
    progress: Callable[[Sequence[Case]], Sequence[Case]] = lambda cases: cases,
) -> ExportSummary:
    """Export ``dataset`` to ``out_dir/DatasetNNN_<name>``; returns what was written.

    ``channel_names`` replaces the channel names in ``dataset.json`` (nnU-Net picks its
    normalisation by name: ``CT`` for CT intensities). A case that cannot be read is
    skipped and listed in the summary (nnU-Net's ``numTraining`` counts what was written).
    """
    folder = Path(out_dir) / nnunet_folder_name(dataset_id, name or dataset.name)
    ensure_outside_inputs(folder, {dataset.root, *(p for c in dataset.cases + dataset.test_cases
                                                  for p in c.files())})
    values = sorted(dataset.labels)
    ids = _unique_ids([c.case_id for c in dataset.cases + dataset.test_cases])
    failed: list[tuple[str, str]] = []
    written = {"imagesTr": 0, "imagesTs": 0}
    for case in progress(dataset.cases + dataset.test_cases):
        sub = "imagesTr" if case.label is not None and case in dataset.cases else "imagesTs"
        try:
            _export_case(case, ids[case.case_id], folder, sub, values)
        except DatasetError as exc:
            failed.append((case.case_id, str(exc)))
            continue
        except OSError as exc:
            raise OutputError(f"cannot write case {case.case_id}: {exc}", folder) from exc
        written[sub] += 1
    write_json(folder / "dataset.json",
               dataset_json(dataset, written["imagesTr"], channel_names))
    return ExportSummary(folder, written["imagesTr"], written["imagesTs"], tuple(failed))


def dataset_json(dataset: Dataset, n_training: int,
                 channel_names: Sequence[str] | None = None) -> dict[str, object]:
    """nnU-Net v2 ``dataset.json`` for ``dataset`` (labels renumbered 0..K-1)."""
    names = list(channel_names) if channel_names else [dataset.channels[c]
                                                       for c in sorted(dataset.channels)]
    if len(names) != len(dataset.channels):
        raise DatasetError(f"{len(names)} channel name(s) for {len(dataset.channels)} "
                           "channel(s)")
    index = {v: i for i, v in enumerate(sorted(dataset.labels))}
    meta: dict[str, object] = {
        "name": dataset.name,
        "channel_names": {str(i): n for i, n in enumerate(names)},
        "numTraining": n_training,
        "file_ending": FILE_ENDING,
    }
    if dataset.regions:
        meta["labels"] = {"background": 0, **{r: [index[v] for v in vs]
                                              for r, vs in dataset.regions.items()}}
        meta["regions_class_order"] = _regions_class_order(dataset, index)
    else:
        meta["labels"] = _unique_names({index[v]: n for v, n in dataset.labels.items()})
    return meta


def _regions_class_order(dataset: Dataset, index: Mapping[int, int]) -> list[int]:
    """The value each region paints: the label value named after it (as loaded)."""
    by_name = {n: v for v, n in dataset.labels.items()}
    order = []
    for region, members in dataset.regions.items():
        value = by_name.get(region, max(members))
        order.append(index[value])
    return order


def _export_case(case: Case, case_id: str, folder: Path, sub: str, values: list[int]) -> None:
    image, label = read_case(case)
    for c in range(image.n_channels):
        write_volume(Volume(image.array[c:c + 1], image.affine),
                     folder / sub / f"{case_id}_{c:04d}{FILE_ENDING}")
    if sub == "imagesTr" and label is not None:
        classes = consecutive_labels(label.array, values, case.case_id)
        write_volume(Volume(classes, label.affine), folder / "labelsTr" / f"{case_id}{FILE_ENDING}")


def consecutive_labels(array: np.ndarray, values: Sequence[int], case_id: str) -> np.ndarray:
    """Label values -> their index in ``values`` (uint8, or uint16 beyond 255 classes)."""
    lut = np.asarray(values, dtype=np.int64)
    flat = np.asarray(array).astype(np.int64)
    idx = np.searchsorted(lut, flat).clip(0, len(lut) - 1)
    if not np.array_equal(lut[idx], flat):
        bad = sorted(set(np.unique(flat).tolist()) - set(lut.tolist()))
        raise DatasetError(f"case {case_id}: label values {bad[:5]} are not declared")
    return idx.astype(np.uint8 if len(values) <= 256 else np.uint16)


def _unique_ids(case_ids: Sequence[str]) -> dict[str, str]:
    """File-system-safe, unique nnU-Net case ids."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for case_id in case_ids:
        base = _UNSAFE.sub("_", case_id).strip("_") or "case"
        safe, n = base, 1
        while safe in used:
            n += 1
            safe = f"{base}_{n}"
        used.add(safe)
        out[case_id] = safe
    return out


def _unique_names(labels: Mapping[int, str]) -> dict[str, int]:
    """``{name: index}`` with repeated names made distinct."""
    out: dict[str, int] = {}
    for index, name in sorted(labels.items()):
        key = "background" if index == 0 else name
        out[key if key not in out else f"{key}_{index}"] = index
    return out
