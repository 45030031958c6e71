"""An nnU-Net v2 trained-model folder's plan: ``plans.json`` + ``dataset.json`` of
``<Trainer>__<Plans>__<configuration>/`` read into one typed object.

Axis conventions: nnU-Net's arrays are ``(z, y, x)`` as SimpleITK returns them, i.e.
medseg's ``(i, j, k)`` reversed, then permuted by ``transpose_forward``; every spacing and
shape here is in nnU-Net's transposed order unless named otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.core.errors import ConfigError
from medseg.data.nnunet import (
    NnunetLabels,
    parse_channels,
    parse_labels,
    read_dataset_json,
    read_json_object,
)

#: Model folder names: ``<Trainer>__<Plans>__<configuration>``.
MODEL_FOLDER = re.compile(r"^(?P<trainer>[^_].*?)__(?P<plans>.+?)__(?P<config>[^_].*)$")
NORMALIZATIONS = ("ZScoreNormalization", "CTNormalization", "NoNormalization",
                  "RescaleTo01Normalization", "RGBTo01Normalization")
#: nnU-Net readers whose arrays medseg reproduces (others: a clear error).
READERS = ("SimpleITKIO", "NibabelIO", "NibabelIOWithReorient")
RESAMPLING_FUNCTIONS = ("resample_data_or_seg_to_shape",)
ANISOTROPY_THRESHOLD = 3.0  # nnU-Net's ANISO_THRESHOLD


@dataclass(frozen=True)
class Resampling:
    """One ``resample_data_or_seg_to_shape`` setting: spline order in-plane, order along a
    separate low-resolution axis, and whether that axis is forced (None: by anisotropy)."""

    order: int
    order_z: int = 0
    force_separate_z: bool | None = None

    @classmethod
    def from_plans(cls, name: str, kwargs: Mapping[str, Any], where: Path) -> Resampling:
        if name not in RESAMPLING_FUNCTIONS:
            raise ConfigError(f"resampling function {name!r} is not supported (medseg "
                              f"reproduces {', '.join(RESAMPLING_FUNCTIONS)})", where)
        if int(kwargs.get("order_z", 0)) not in (0, 1):
            raise ConfigError(f"{name} order_z {kwargs.get('order_z')} is not supported "
                              "(0 or 1)", where)
        force = kwargs.get("force_separate_z")
        return cls(int(kwargs.get("order", 3)), int(kwargs.get("order_z", 0)),
                   None if force is None else bool(force))


@dataclass(frozen=True)
class NnunetPlan:
    """What inference needs from an nnU-Net v2 model folder."""

    folder: Path
    dataset_name: str
    configuration: str
    trainer: str
    channels: dict[int, str]
    labels: NnunetLabels
    reader: str
    transpose_forward: tuple[int, ...]
    transpose_backward: tuple[int, ...]
    spacing: tuple[float, ...]  # target spacing (2 entries for 2D configurations)
    patch_size: tuple[int, ...]
    normalization: tuple[str, ...]
    use_mask_for_norm: tuple[bool, ...]
    intensity_properties: dict[int, dict[str, float]]
    resample_data: Resampling
    resample_probabilities: Resampling
    architecture: dict[str, Any]
    batch_size: int = 2

    @property
    def is_2d(self) -> bool:
        return len(self.patch_size) == 2

    @property
    def n_outputs(self) -> int:
        """Network output channels: one per class, or one per region."""
        return len(self.labels.regions) if self.labels.has_regions else len(self.labels.values)

    @classmethod
    def load(cls, folder: str | Path) -> NnunetPlan:
        folder = Path(folder)
        plans_file = folder / "plans.json"
        plans = read_json_object(plans_file, "nnU-Net plans", ConfigError)
        dataset = read_dataset_json(folder / "dataset.json")
        match = MODEL_FOLDER.match(folder.name)
        if match is None:
            raise ConfigError("an nnU-Net model folder is named "
                              "<Trainer>__<Plans>__<configuration>", folder)
        config = _configuration(plans, match["config"], plans_file)
        try:
            return cls._from_dicts(folder, plans, dataset, config, match)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid nnU-Net plans: {type(exc).__name__}: {exc}",
                              plans_file) from exc

    @classmethod
    def _from_dicts(cls, folder: Path, plans: Mapping[str, Any], dataset: Mapping[str, Any],
                    config: Mapping[str, Any], match: re.Match) -> NnunetPlan:
        where = folder / "plans.json"
        reader = str(dataset.get("overwrite_image_reader_writer", plans["image_reader_writer"]))
        if reader not in READERS:
            raise ConfigError(f"image reader {reader!r} is not supported (medseg reproduces "
                              f"{', '.join(READERS)})", where)
        if config.get("previous_stage") or config.get("previous_stage_name"):
            raise ConfigError(f"configuration {match['config']!r} is a cascade stage (it needs "
                              "the previous stage's prediction); not supported", where)
        norms = tuple(str(n) for n in config["normalization_schemes"])
        unknown = sorted(set(norms) - set(NORMALIZATIONS))
        if unknown:
            raise ConfigError(f"normalization {unknown} is not supported", where)
        props = plans.get("foreground_intensity_properties_per_channel", {})
        return cls(
            folder=folder, dataset_name=str(plans.get("dataset_name", folder.parent.name)),
            configuration=match["config"], trainer=match["trainer"],
            channels=parse_channels(dataset, folder / "dataset.json"),
            labels=parse_labels(dataset, folder / "dataset.json"), reader=reader,
            transpose_forward=tuple(int(a) for a in plans["transpose_forward"]),
            transpose_backward=tuple(int(a) for a in plans["transpose_backward"]),
            spacing=tuple(float(s) for s in config["spacing"]),
            patch_size=tuple(int(p) for p in config["patch_size"]),
            normalization=norms,
            use_mask_for_norm=tuple(bool(u) for u in config["use_mask_for_norm"]),
            intensity_properties={int(k): {n: float(x) for n, x in v.items()}
                                  for k, v in props.items()},
            resample_data=Resampling.from_plans(config["resampling_fn_data"],
                                                config["resampling_fn_data_kwargs"], where),
            resample_probabilities=Resampling.from_plans(
                config["resampling_fn_probabilities"],
                config["resampling_fn_probabilities_kwargs"], where),
            architecture=dict(config["architecture"]),
            batch_size=int(config.get("batch_size", 2)),
        )


def is_nnunet_model_folder(path: str | Path) -> bool:
    """True for a folder holding nnU-Net's ``plans.json`` and ``dataset.json`` and named
    ``<Trainer>__<Plans>__<configuration>``."""
    path = Path(path)
    return (path.is_dir() and (path / "plans.json").is_file()
            and (path / "dataset.json").is_file() and MODEL_FOLDER.match(path.name) is not None)


def _configuration(plans: Mapping[str, Any], name: str, where: Path) -> dict[str, Any]:
    """A configuration with ``inherits_from`` resolved (as nnU-Net's PlansManager)."""
    configs = plans.get("configurations", {})
    if name not in configs:
        raise ConfigError(f"plans have no configuration {name!r} (have "
                          f"{', '.join(configs) or 'none'})", where)
    config = dict(configs[name])
    seen = {name}
    while "inherits_from" in config:
        parent = config.pop("inherits_from")
        if parent in seen or parent not in configs:
            raise ConfigError(f"configuration {name!r} inherits from {parent!r}, which is "
                              "missing or circular", where)
        seen.add(parent)
        config = {**configs[parent], **config}
    return config
