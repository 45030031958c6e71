"""The dataset types shared by every layout (Decathlon, paired folders, DICOM studies)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from medseg.core.errors import DatasetError

DATASET_FORMAT = "medseg-dataset-v1"


@dataclass(frozen=True)
class Case:
    """One case: an image per channel (a file or a DICOM series folder) and its label."""

    case_id: str
    images: tuple[Path, ...]
    label: Path | None
    image_series: tuple[str | None, ...] = ()
    label_series: str | None = None
    regularize: bool = False  # resample irregular DICOM series onto a regular grid when read
    # an annotation file as label ("rtstruct" or "dicom-seg"), the ROI or segment names
    # each label value is made of, and how overlaps are resolved (None: the format's default)
    label_format: str | None = None
    label_rois: tuple[tuple[int, str], ...] = ()
    label_overlap: str | None = None

    def files(self) -> tuple[Path, ...]:
        """Every input path of the case (images, then the label if any)."""
        return self.images + ((self.label,) if self.label is not None else ())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "case_id": self.case_id,
            "images": [str(p) for p in self.images],
            "label": None if self.label is None else str(self.label),
        }
        if any(uid is not None for uid in self.image_series) or self.label_series:
            out["image_series"] = list(self.image_series)
            out["label_series"] = self.label_series
        if self.regularize:
            out["regularize"] = True
        if self.label_format:
            out["label_format"] = self.label_format
            out["label_rois"] = [[v, name] for v, name in self.label_rois]
            out["label_overlap"] = self.label_overlap
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Case:
        return cls(
            case_id=str(d["case_id"]),
            images=tuple(Path(p) for p in d["images"]),
            label=None if d.get("label") is None else Path(d["label"]),
            image_series=tuple(d.get("image_series", ())),
            label_series=d.get("label_series"),
            regularize=bool(d.get("regularize", False)),
            label_format=d.get("label_format"),
            label_rois=tuple((int(v), str(n)) for v, n in d.get("label_rois", ())),
            label_overlap=d.get("label_overlap"),
        )


@dataclass(frozen=True)
class Dataset:
    """A labelled dataset: label and channel names, training cases and unlabelled test cases."""

    name: str
    root: Path
    labels: dict[int, str]
    channels: dict[int, str]
    cases: tuple[Case, ...]
    test_cases: tuple[Case, ...] = field(default=())
    # Region-based labels (nnU-Net v2): region name -> label values it unites.
    regions: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if 0 not in self.labels:
            raise DatasetError("labels must declare 0 (background)", self.root)
        ids = [c.case_id for c in self.cases + self.test_cases]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise DatasetError(f"duplicate case ids: {', '.join(dupes[:5])}", self.root)
        bad = [c.case_id for c in self.cases + self.test_cases
               if len(c.images) != len(self.channels)]
        if bad:
            raise DatasetError(
                f"{len(bad)} case(s) do not have {len(self.channels)} channel image(s): "
                f"{', '.join(bad[:5])}", self.root)

    @property
    def label_values(self) -> tuple[int, ...]:
        """Declared label values in class-index order (class k has value label_values[k])."""
        return tuple(sorted(self.labels))

    def case(self, case_id: str) -> Case:
        """The training or test case with this id."""
        for c in self.cases + self.test_cases:
            if c.case_id == case_id:
                return c
        raise DatasetError(f"no case named {case_id!r}", self.root)

    def with_cases(self, cases: tuple[Case, ...]) -> Dataset:
        """The same dataset restricted to ``cases`` (e.g. the valid ones)."""
        return replace(self, cases=tuple(cases))

    def with_regularized_slices(self) -> Dataset:
        """The same dataset with every case read with DICOM slice regularisation (irregular
        series resampled onto a regular grid instead of refused; see ``medseg.io``)."""
        return replace(self, cases=tuple(replace(c, regularize=True) for c in self.cases),
                       test_cases=tuple(replace(c, regularize=True) for c in self.test_cases))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": DATASET_FORMAT,
            "name": self.name,
            "root": str(self.root),
            "labels": {str(k): v for k, v in sorted(self.labels.items())},
            "channels": {str(k): v for k, v in sorted(self.channels.items())},
            "cases": [c.to_dict() for c in self.cases],
            "test_cases": [c.to_dict() for c in self.test_cases],
            **({"regions": {k: list(v) for k, v in self.regions.items()}}
               if self.regions else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Dataset:
        if d.get("format") != DATASET_FORMAT:
            raise DatasetError(f"not a {DATASET_FORMAT} listing (format={d.get('format')!r})")
        return cls(
            name=str(d["name"]),
            root=Path(d["root"]),
            labels={int(k): str(v) for k, v in d["labels"].items()},
            channels={int(k): str(v) for k, v in d["channels"].items()},
            cases=tuple(Case.from_dict(c) for c in d["cases"]),
            test_cases=tuple(Case.from_dict(c) for c in d.get("test_cases", ())),
            regions={str(k): tuple(int(x) for x in v) for k, v in d.get("regions", {}).items()},
        )
