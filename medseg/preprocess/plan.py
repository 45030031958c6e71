"""The plan: an editable JSON file saying how to preprocess a dataset and which networks
to train on it. ``planning.py`` derives one from a dataset fingerprint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from medseg.core.atomic import write_json
from medseg.core.errors import ConfigError

PLAN_FORMAT = "medseg-plan-v1"
# Fields that change the preprocessed arrays; only these key the cache.
NORMALIZATION_SCHEMES = {"zscore_nonzero": (), "ct": ("clip", "mean", "std"), "none": ()}
PREPROCESSING_FIELDS = ("labels", "channels", "target_spacing", "normalization",
                        "image_interpolation", "label_interpolation", "crop_to_nonzero")


OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class TrainingPlan:
    """How one configuration is trained and used; the defaults are nnU-Net's (a long
    training, e.g. on a GPU). Automatic planning (``medseg.train.autoplan``) replaces them
    to fit the device and the time budget, saying why in ``Configuration.reasons``."""

    iterations_per_epoch: int = 250
    validate_every: int = 5  # epochs between validations (the last one always validates)
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum 0.99) | "adamw"
    learning_rate: float = 1e-2  # initial LR of the poly schedule
    rotation: str = "3d"  # "3d": about every axis; "in-plane": about the coarsest axis only
    mirror_tta: bool = True  # test-time mirroring when predicting
    # Spatial axes (0-2 of the RAS-ordered arrays) mirrored in augmentation and at test
    # time; the planner leaves out the left-right axis 0 when labels name a body side.
    mirror_axes: tuple[int, ...] = (0, 1, 2)

    def to_dict(self) -> dict[str, Any]:
        return {"iterations_per_epoch": self.iterations_per_epoch,
                "validate_every": self.validate_every, "optimizer": self.optimizer,
                "learning_rate": self.learning_rate, "rotation": self.rotation,
                "mirror_tta": self.mirror_tta, "mirror_axes": list(self.mirror_axes)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainingPlan:
        default = cls()
        return cls(
            iterations_per_epoch=int(d.get("iterations_per_epoch",
                                           default.iterations_per_epoch)),
            validate_every=int(d.get("validate_every", default.validate_every)),
            optimizer=str(d.get("optimizer", default.optimizer)),
            learning_rate=float(d.get("learning_rate", default.learning_rate)),
            rotation=str(d.get("rotation", default.rotation)),
            mirror_tta=bool(d.get("mirror_tta", default.mirror_tta)),
            mirror_axes=tuple(int(a) for a in d.get("mirror_axes", default.mirror_axes)),
        )

    def check(self) -> None:
        if self.iterations_per_epoch < 1 or self.validate_every < 1:
            raise ConfigError("training.iterations_per_epoch and validate_every must be >= 1")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"training.optimizer must be one of {', '.join(OPTIMIZERS)}, "
                              f"got {self.optimizer!r}")
        if self.learning_rate <= 0:
            raise ConfigError(f"training.learning_rate must be positive, "
                              f"got {self.learning_rate}")
        if self.rotation not in ("3d", "in-plane"):
            raise ConfigError(f"training.rotation must be '3d' or 'in-plane', "
                              f"got {self.rotation!r}")
        axes = list(self.mirror_axes)
        if len(set(axes)) != len(axes) or not set(axes) <= {0, 1, 2}:
            raise ConfigError(f"training.mirror_axes must be distinct spatial axes among "
                              f"0, 1, 2, got {axes}")


@dataclass(frozen=True)
class Configuration:
    """One network configuration (``"3d"`` or ``"2d"``) for MONAI's DynUNet, how it is
    trained, and why each automatic choice was made (``reasons``: field -> text)."""

    patch_size: tuple[int, ...]
    batch_size: int
    spacing: tuple[float, ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    strides: tuple[tuple[int, ...], ...]
    filters: tuple[int, ...]
    deep_supervision: bool = True
    slice_axis: int | None = None  # 2D configurations: the preprocessed axis sliced along
    training: TrainingPlan = field(default_factory=TrainingPlan)
    reasons: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def spatial_dims(self) -> int:
        return len(self.patch_size)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "patch_size": list(self.patch_size), "batch_size": self.batch_size,
            "spacing": list(self.spacing),
            "kernel_sizes": [list(k) for k in self.kernel_sizes],
            "strides": [list(s) for s in self.strides], "filters": list(self.filters),
            "deep_supervision": self.deep_supervision,
        }
        if self.slice_axis is not None:
            out["slice_axis"] = self.slice_axis
        out["training"] = self.training.to_dict()
        if self.reasons:
            out["reasons"] = dict(self.reasons)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Configuration:
        config = cls(
            patch_size=tuple(int(v) for v in d["patch_size"]),
            batch_size=int(d["batch_size"]),
            spacing=tuple(float(v) for v in d["spacing"]),
            kernel_sizes=tuple(tuple(int(v) for v in k) for k in d["kernel_sizes"]),
            strides=tuple(tuple(int(v) for v in s) for s in d["strides"]),
            filters=tuple(int(v) for v in d["filters"]),
            deep_supervision=bool(d.get("deep_supervision", True)),
            slice_axis=None if d.get("slice_axis") is None else int(d["slice_axis"]),
            training=TrainingPlan.from_dict(d.get("training", {})),
            reasons={str(k): str(v) for k, v in d.get("reasons", {}).items()},
        )
        config.check()
        return config

    def check(self) -> None:
        """Raise ConfigError if the network description is inconsistent."""
        n = self.spatial_dims
        levels = len(self.strides)
        if not (len(self.kernel_sizes) == levels == len(self.filters)):
            raise ConfigError("kernel_sizes, strides and filters must have one entry per level")
        if any(len(k) != n for k in self.kernel_sizes + self.strides):
            raise ConfigError(f"every kernel size and stride needs {n} entries")
        if self.batch_size < 1 or min(self.patch_size) < 1:
            raise ConfigError("batch_size and patch_size must be positive")
        for axis in range(n):
            divisor = 1
            for s in self.strides:
                divisor *= s[axis]
            if self.patch_size[axis] % divisor:
                raise ConfigError(f"patch_size {list(self.patch_size)} axis {axis} is not "
                                  f"divisible by the total stride {divisor}")
        self.training.check()


@dataclass(frozen=True)
class Plan:
    """How to preprocess a dataset and which networks to train (see docs/architecture.md)."""

    dataset_name: str
    labels: dict[int, str]
    channels: dict[int, str]
    target_spacing: tuple[float, ...]
    normalization: tuple[dict[str, Any], ...]
    configurations: dict[str, Configuration] = field(default_factory=dict)
    image_interpolation: str = "cubic"
    label_interpolation: str = "nearest"
    crop_to_nonzero: bool = True
    # a class absent from a case's reference is not annotated there (see docs/planning.md)
    partial_labels: bool = False
    # what automatic planning chose and measured (medseg.train.autoplan); informational
    auto: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def label_values(self) -> tuple[int, ...]:
        """Label value of each class index (class k is ``label_values[k]``)."""
        return tuple(sorted(self.labels))

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    def configuration(self, name: str) -> Configuration:
        if name not in self.configurations:
            raise ConfigError(f"plan has no configuration {name!r} "
                              f"(has {', '.join(self.configurations)})")
        return self.configurations[name]

    def with_changes(self, **changes: Any) -> Plan:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "dataset_name": self.dataset_name,
            "labels": {str(k): v for k, v in sorted(self.labels.items())},
            "channels": {str(k): v for k, v in sorted(self.channels.items())},
            "target_spacing": list(self.target_spacing),
            "normalization": [dict(n) for n in self.normalization],
            "image_interpolation": self.image_interpolation,
            "label_interpolation": self.label_interpolation,
            "crop_to_nonzero": self.crop_to_nonzero,
            "partial_labels": self.partial_labels,
            "configurations": {k: c.to_dict() for k, c in self.configurations.items()},
            **({"auto": self.auto} if self.auto else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Plan:
        if d.get("format") != PLAN_FORMAT:
            raise ConfigError(f"not a {PLAN_FORMAT} plan (format={d.get('format')!r})")
        try:
            plan = cls(
                dataset_name=str(d["dataset_name"]),
                labels={int(k): str(v) for k, v in d["labels"].items()},
                channels={int(k): str(v) for k, v in d["channels"].items()},
                target_spacing=tuple(float(v) for v in d["target_spacing"]),
                normalization=tuple(dict(n) for n in d["normalization"]),
                configurations={k: Configuration.from_dict(c)
                                for k, c in d.get("configurations", {}).items()},
                image_interpolation=str(d.get("image_interpolation", "cubic")),
                label_interpolation=str(d.get("label_interpolation", "nearest")),
                crop_to_nonzero=bool(d.get("crop_to_nonzero", True)),
                partial_labels=bool(d.get("partial_labels", False)),
                auto=dict(d.get("auto", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid plan: {type(exc).__name__}: {exc}") from exc
        plan.check()
        return plan

    def check(self) -> None:
        """Raise ConfigError if the plan cannot be applied."""
        if 0 not in self.labels or len(self.labels) > 255:
            raise ConfigError("labels must include 0 (background) and at most 255 classes")
        if len(self.target_spacing) != 3 or min(self.target_spacing) <= 0:
            raise ConfigError(f"target_spacing must be 3 positive numbers, "
                              f"got {list(self.target_spacing)}")
        if len(self.normalization) != len(self.channels):
            raise ConfigError(f"{len(self.normalization)} normalization entries for "
                              f"{len(self.channels)} channel(s)")
        for c, scheme in enumerate(self.normalization):
            _check_normalization(c, scheme)
        if self.image_interpolation not in ("nearest", "linear", "cubic"):
            raise ConfigError(f"unknown image_interpolation {self.image_interpolation!r}")
        if self.label_interpolation not in ("nearest", "linear"):
            raise ConfigError(f"unknown label_interpolation {self.label_interpolation!r}")

    def preprocessing_hash(self) -> str:
        """Hash of the fields that change preprocessed arrays (network settings excluded)."""
        d = self.to_dict()
        blob = json.dumps({k: d[k] for k in PREPROCESSING_FIELDS}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read plan: {exc}", path) from exc
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(str(exc), path) from exc


def _check_normalization(channel: int, scheme: Mapping[str, Any]) -> None:
    name = scheme.get("scheme")
    if name not in NORMALIZATION_SCHEMES:
        raise ConfigError(f"normalization of channel {channel}: unknown scheme {name!r} "
                          f"(one of {', '.join(NORMALIZATION_SCHEMES)})")
    missing = [k for k in NORMALIZATION_SCHEMES[name] if k not in scheme]
    if missing:
        raise ConfigError(f"normalization of channel {channel} ({name}) needs {missing}")
    if name == "ct" and (len(scheme["clip"]) != 2 or float(scheme["std"]) <= 0):
        raise ConfigError(f"normalization of channel {channel} (ct) needs clip [lo, hi] "
                          "and a positive std")
