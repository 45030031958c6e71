"""The pipeline file: YAML loaded into frozen, typed, validated configuration objects.

A pipeline file has one mapping per section (``dataset``, ``plan``, ``preprocess``,
``train``, ``predict``, ``evaluate``, ``run``). Paths in the file are resolved relative to
the file's folder; ``--set section.key=value`` overrides (value parsed as YAML) are applied
before validation, their paths resolved relative to the current directory. Every problem
raises :class:`~medseg.core.errors.ConfigError` naming the file and the dotted key.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

import medseg
from medseg.core.errors import ConfigError
from medseg.data import DEFAULT_LABEL_SOURCE, LabelSource
from medseg.inference.predictor import InferenceSettings
from medseg.io.annotation import Overlap
from medseg.metrics.evaluate import DEFAULT_NSD_TOLERANCE_MM
from medseg.pipeline.schema import (
    Source,
    build,
    doc,
    in_range,
    positive,
    reference_rows,
    suggest,
    to_plain,
)
from medseg.train.settings import (
    DEFAULT_CONFIGURATION,
    DEFAULT_FOLD,
    MIN_CASES_TO_VALIDATE,
    TrainSettings,
)

Device = Literal["auto", "cpu", "cuda"]
TRAIN = TrainSettings()  # the training defaults (medseg.train.settings)


def positive_regions(value: Any) -> str | None:
    """Check: every region lists at least one positive label value."""
    for name, members in value.items():
        if not members or min(members) <= 0:
            return f"region {name!r} needs positive label values, got {list(members)}"
    return None


@dataclass(frozen=True)
class DatasetConfig:
    """Where the cases are and which of them are held out for evaluation."""

    path: Path = field(metadata=doc(
        "Dataset root: a Decathlon folder (dataset.json, imagesTr/, labelsTr/) or a folder "
        "of DICOM studies whose image series are paired with a mask series, an RTSTRUCT or "
        "a DICOM-SEG (label_source).", exists=True))
    label_source: LabelSource = field(default=DEFAULT_LABEL_SOURCE, metadata=doc(
        "DICOM studies only: labels from mask series (mask_series), or from every RTSTRUCT "
        "or DICOM-SEG file, on the image series it was drawn on."))
    structures: dict[str, tuple[str, ...] | None] | None = field(default=None, metadata=doc(
        "rtstruct/dicom-seg only: label name -> other spellings of its ROI or segment name "
        "(compared ignoring case, spaces, '_' and '-'; '/regex/' searches); label values "
        "1, 2, ... in this order (null: the names found in every file). A case lacking a "
        "structure has none of it in its label map."))
    overlap: Overlap | None = field(default=None, metadata=doc(
        "rtstruct/dicom-seg only: where structures overlap, the smaller one or the later "
        "one wins, or it is an error (null: smaller for RTSTRUCT, error for DICOM-SEG)."))
    mask_series: str = field(default="MaskTumor", metadata=doc(
        "DICOM studies only: regular expression (case-insensitive; spaces, '_' and '-' "
        "ignored) matching the SeriesDescription of the mask series."))
    channels: tuple[str, ...] | None = field(default=None, metadata=doc(
        "DICOM studies only: SeriesDescriptions of the image series to use as channels, in "
        "order (null: every description found next to each mask, sorted)."))
    strict: bool = field(default=False, metadata=doc(
        "Stop at the first invalid case instead of excluding it with a reason."))
    regularize_slices: bool = field(default=False, metadata=doc(
        "DICOM only: resample series with missing slices, non-uniform slice spacing or "
        "gantry tilt onto a regular grid (images linearly, masks by nearest slice) instead "
        "of excluding the case."))
    holdout_fraction: float = field(default=0.2, metadata=doc(
        "Fraction of the valid labelled cases held out from training for the evaluation "
        "stage (0 = none: nothing to evaluate).", check=in_range(0, 1, hi_open=True)))
    holdout_seed: int = field(default=0, metadata=doc(
        "Seed of the fixed, reproducible hold-out draw."))


@dataclass(frozen=True)
class NetworkConfig:
    """Hand-set network sizes for one configuration (kept as set, not fitted)."""

    filters: tuple[int, ...] | None = field(default=None, metadata=doc(
        "Feature maps per resolution level, one per level of the plan (null: chosen for the "
        "device and budget when training starts).", check=positive))
    batch_size: int | None = field(default=None, metadata=doc(
        "Patches per batch (null: chosen for the device and budget).", check=positive))


@dataclass(frozen=True)
class PlanConfig:
    """Automatic planning (fingerprint → plan.json) or a hand-edited plan."""

    file: Path | None = field(default=None, metadata=doc(
        "Use this plan.json (e.g. an edited copy of a run's plan) instead of planning "
        "automatically; its values are kept as written.", exists=True))
    memory_budget_gb: float | None = field(default=None, metadata=doc(
        "GPU memory the reference (nnU-Net) configuration is sized for (null: the GPU's "
        "memory, 8 GB without one). The network actually trained is fitted to the device's "
        "measured speed and train.max_minutes when training starts.", check=positive))
    partial_labels: Literal["auto", "on", "off"] = field(default="auto", metadata=doc(
        "on: a class absent from a case's label is not annotated there (left out of that "
        "case's loss and not scored); off: it is background; auto: on when some class is "
        "missing from some training cases (see docs/planning.md)."))
    network_3d: NetworkConfig = field(default_factory=NetworkConfig, metadata=doc(
        "Changes to the planned 3D configuration (kept as set: not re-fitted)."))
    network_2d: NetworkConfig = field(default_factory=NetworkConfig, metadata=doc(
        "Changes to the planned 2D configuration (kept as set: not re-fitted)."))


@dataclass(frozen=True)
class PreprocessConfig:
    """Per-case preprocessing into the on-disk cache."""

    workers: int = field(default=2, metadata=doc(
        "Worker processes.", hashed=False, check=positive))


@dataclass(frozen=True)
class TrainConfig:
    """Training of one or more folds of one configuration."""

    configuration: Literal["auto", "3d", "2d"] = field(
        default=DEFAULT_CONFIGURATION, metadata=doc(
            "Plan configuration to train (auto: 3d, or 2d when max_minutes is too short "
            "for 3d on this device)."))
    folds: tuple[int | Literal["all", "auto"], ...] = field(default=(DEFAULT_FOLD,),
                                                             metadata=doc(
        "Folds to train: cross-validation fold indices, 'all' (every training case, no "
        f"validation), or 'auto' (fold 0; 'all' below {MIN_CASES_TO_VALIDATE} cases)."))
    num_folds: int = field(default=TRAIN.n_folds, metadata=doc(
        "Number of cross-validation folds in splits.json.", check=in_range(2, 100)))
    epochs: int | None = field(default=None, metadata=doc(
        "Number of epochs (null: set by max_minutes).", check=positive))
    max_minutes: float | None = field(default=None, metadata=doc(
        "Hard wall-clock budget per fold: the network and schedule are fitted to it, and "
        "training, validation and checkpoints end within it. Give epochs or max_minutes, "
        "not both (neither: 1000 epochs).", check=positive))
    iterations_per_epoch: int | None = field(default=None, metadata=doc(
        "Training iterations (batches) per epoch (null: the plan's choice).", check=positive))
    validate_every: int | None = field(default=None, metadata=doc(
        "Validate on the fold's validation cases every this many epochs (null: the plan's "
        "choice).", check=positive))
    optimizer: Literal["sgd", "adamw"] | None = field(default=None, metadata=doc(
        "SGD with Nesterov momentum (nnU-Net's) or AdamW (null: the plan's choice)."))
    learning_rate: float | None = field(default=None, metadata=doc(
        "Initial learning rate, decayed with the poly schedule (null: the plan's choice).",
        check=positive))
    fit_plan: bool = field(default=True, metadata=doc(
        "Fit the plan's network and schedule to the device's measured speed and "
        "max_minutes when training starts (false: train plan.json as written)."))
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field(default=TRAIN.precision,
                                                                metadata=doc(
        "Mixed precision (auto: fp16 on CUDA, bf16 on CPUs with native bfloat16, else "
        "fp32)."))
    workers: int | None = field(default=None, metadata=doc(
        "Data loader processes (null: 1 on CPU, up to 8 with CUDA).", hashed=False,
        check=positive))
    device: Device = field(default="auto", metadata=doc("Training device.", hashed=False))
    seed: int = field(default=TRAIN.seed, metadata=doc(
        "Random seed (splits, sampling, initialisation)."))


@dataclass(frozen=True)
class PredictConfig:
    """Prediction of the held-out cases (and any extra inputs)."""

    inputs: tuple[Path, ...] = field(default=(), metadata=doc(
        "Extra inputs to predict (files, folders, DICOM series or studies); their outputs "
        "go to predictions/extra/.", exists=True))
    format: Literal["nifti", "dicom-seg", "rtstruct"] = field(default="nifti", metadata=doc(
        "Output format of predict.inputs. With dicom-seg (rtstruct), held-out DICOM cases also "
        "get a DICOM-SEG (RTSTRUCT) in predictions/dicom_seg/ (rtstruct/); their NIfTI, for "
        "evaluation, is always written."))
    tta: bool | None = field(default=None, metadata=doc(
        "Test-time mirroring (null: the plan's choice, on where the device predicts a "
        "median case with it within a minute)."))
    uncertainty: bool = field(default=True, metadata=doc(
        "Also write per-voxel uncertainty maps and per-case uncertainty scores next to the "
        "held-out and extra predictions (the evaluation report shows them); the label maps "
        "are the same either way."))
    overlap: float = field(default=InferenceSettings.overlap, metadata=doc(
        "Sliding-window overlap.", check=in_range(0, 1, hi_open=True)))
    device: Device = field(default="auto", metadata=doc("Prediction device.", hashed=False))


@dataclass(frozen=True)
class EvaluateConfig:
    """Evaluation of the held-out predictions against their labels."""

    nsd_tolerance_mm: float = field(default=DEFAULT_NSD_TOLERANCE_MM, metadata=doc(
        "Tolerance of the normalized surface Dice, in mm.", check=positive))
    regions: dict[str, tuple[int, ...]] = field(default_factory=dict, metadata=doc(
        "Unions of labels scored as well, name -> label values (BraTS: whole_tumour: "
        "[1, 2, 3, 4], tumour_core: [1, 3, 4], enhancing: [4]).", check=positive_regions))


@dataclass(frozen=True)
class RunConfig:
    """The run folder."""

    workdir: Path | None = field(default=None, metadata=doc(
        "Run folder (null: runs/<pipeline name> under the current directory); --workdir "
        "on the command line wins.", hashed=False))


@dataclass(frozen=True)
class PipelineConfig:
    """A whole pipeline file."""

    name: str = field(metadata=doc("Pipeline name (names the default run folder)."))
    dataset: DatasetConfig = field(metadata=doc("Dataset section."))
    plan: PlanConfig = field(default_factory=PlanConfig, metadata=doc("Plan section."))
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig,
                                         metadata=doc("Preprocess section."))
    train: TrainConfig = field(default_factory=TrainConfig, metadata=doc("Train section."))
    predict: PredictConfig = field(default_factory=PredictConfig,
                                   metadata=doc("Predict section."))
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig,
                                     metadata=doc("Evaluate section."))
    run: RunConfig = field(default_factory=RunConfig, metadata=doc("Run section."))
    medseg_version: str | None = field(default=None, metadata=doc(
        "Written into config.resolved.yaml (informational).", hashed=False))


def read_yaml(path: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file (ConfigError when missing or malformed)."""
    if not path.is_file():
        raise ConfigError("pipeline file not found", path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}".replace("\n", " "), path) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("expected a mapping of sections at the top level", path)
    return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'train.max_minutes=2'`` → (['train', 'max_minutes'], 2.0); the value is YAML."""
    key, sep, value = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    try:
        return parts, yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value is not valid YAML: {value!r}") from exc


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> tuple[dict, set[str]]:
    """``raw`` with the ``--set`` overrides applied, and the dotted keys they set."""
    merged = copy.deepcopy(raw)
    keys: set[str] = set()
    valid = _valid_keys()
    for text in overrides:
        parts, value = parse_override(text)
        dotted = ".".join(parts)
        if dotted not in valid and not any(v.startswith(dotted + ".") for v in valid):
            raise ConfigError(f"--set: unknown key '{dotted}'{suggest(dotted, sorted(valid))}")
        node = merged
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set: '{dotted}' goes inside a non-mapping value")
        node[parts[-1]] = value
        keys.add(dotted)
    return merged, keys


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> PipelineConfig:
    """Load, override and validate a pipeline file."""
    raw, overridden = apply_overrides(read_yaml(Path(path)), overrides)
    file_source = Source(str(path), Path(path).resolve().parent)
    cli_source = Source("--set", Path.cwd())

    def source_of(dotted: str) -> Source:
        hit = any(dotted == k or dotted.startswith(k + ".") for k in overridden)
        return cli_source if hit else file_source

    config = build(PipelineConfig, raw, "", source_of)
    check_combinations(config, source_of)
    return config


def check_combinations(config: PipelineConfig, source_of: Callable[[str], Source]) -> None:
    """Checks that involve more than one key."""
    if config.train.epochs is not None and config.train.max_minutes is not None:
        raise ConfigError("'train.epochs' and 'train.max_minutes': give one of them, not both "
                          "(set the other to null)", source_of("train.max_minutes").name)


def to_yaml(config: PipelineConfig) -> str:
    """The resolved configuration as YAML, stamped with the medseg version."""
    plain = to_plain(dataclasses.replace(config, medseg_version=medseg.__version__))
    header = "# Resolved pipeline configuration (absolute paths, every default filled in).\n"
    return header + yaml.safe_dump(plain, sort_keys=False)


def section_hash_input(config: PipelineConfig, section: str) -> Any:
    """The plain values of ``section`` that affect results (stage hashing)."""
    return to_plain(getattr(config, section), hashed_only=True)


def reference_markdown() -> str:
    """docs/pipeline-reference.md, generated from the dataclasses above."""
    lines = [
        "# Pipeline file reference",
        "",
        "<!-- Generated by `python -m medseg.pipeline.reference`; do not edit by hand. -->",
        "",
        "A pipeline file is YAML with one mapping per section. Relative paths are resolved",
        "against the folder of the pipeline file. Override any key on the command line with",
        "`medseg run FILE --set section.key=value` (the value is parsed as YAML, relative",
        "paths against the current directory). Unknown keys, wrong types and missing paths",
        "are errors that name the file and the key.",
        "",
        "```yaml",
        "name: demo",
        "dataset:",
        "  path: ../data_samples/hippocampus",
        "  holdout_fraction: 0.2",
        "train:",
        "  configuration: 3d",
        "  folds: [all]",
        "  max_minutes: 3",
        "```",
        "",
        "Each section configures one stage (`dataset`: ingest, `plan`, `preprocess`, "
        "`train`,",
        "`predict`, `evaluate`); a change to a section re-runs that stage and, if its outputs",
        "change, the stages after it. Keys marked *Not hashed* never cause a re-run.",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for key, tp, default, meaning in reference_rows(PipelineConfig):
        lines.append(f"| `{key}` | {tp.replace('|', '&#124;')} | `{default}` | {meaning} |")
    return "\n".join(lines) + "\n"


def _valid_keys() -> set[str]:
    return {row[0] for row in reference_rows(PipelineConfig)}
