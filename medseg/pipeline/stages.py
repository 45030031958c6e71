"""The pipeline's stages: ingest → plan → preprocess → train → predict → evaluate.

Each stage is a small function of a :class:`~medseg.pipeline.runner.StageContext` that
calls the library API of one package and returns the run-folder paths it wrote. The run
folder explains itself::

    RUN/config.resolved.yaml  stages.json
    RUN/dataset.json          listing + validation, DICOM pairs (ingest)
    RUN/holdout.json          cases kept out of training for evaluation (ingest)
    RUN/reference/            held-out labels and images as NIfTI (ingest)
    RUN/fingerprint.json  plan.json                                (plan)
    RUN/preprocessed/<hash>/                                       (preprocess)
    RUN/splits.json  RUN/train/<config>/fold_<k>/                  (train)
    RUN/predictions/holdout/  extra/  dicom_seg/ or rtstruct/      (predict)
    RUN/evaluation/  per_case.csv, summary.json, index.html, ...   (evaluate)
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from medseg.core import Volume
from medseg.core.atomic import write_json
from medseg.core.errors import ConfigError, DatasetError, InputError
from medseg.data import Case, describe_dataset, load_dataset, read_case, validate_dataset
from medseg.data import write_listing as write_dataset_listing
from medseg.inference.batch import DICOM_FORMATS, BatchOptions, predict_batch, summary_table
from medseg.inference.jobs import Job, discover_jobs
from medseg.inference.predictor import InferenceSettings, Predictor
from medseg.io import Structure, write_volume
from medseg.metrics import evaluate_folders
from medseg.pipeline.config import NetworkConfig, PipelineConfig
from medseg.pipeline.holdout import LISTING_FILE, draw_holdout, split_dataset, write_holdout
from medseg.pipeline.runner import Stage, StageContext, StageResult
from medseg.preprocess import Plan, compute_fingerprint, plan_dataset, preprocess_dataset
from medseg.train import OptimSettings, TrainSettings, train_fold
from medseg.train.api import plan_for_device, planning_memory_gb
from medseg.train.settings import resolve_fold

log = logging.getLogger(__name__)

REFERENCE_DIR = "reference"
PLAN_FILE = "plan.json"
PREDICTIONS_DIR = "predictions"
HOLDOUT_DIR = "holdout"
DICOM_SEG_DIR = "dicom_seg"
RTSTRUCT_DIR = "rtstruct"
EXTRA_DIR = "extra"
EVALUATION_DIR = "evaluation"


# --- ingest -----------------------------------------------------------------------------
def ingest(ctx: StageContext) -> StageResult:
    """Find the cases, validate them, draw the hold-out and keep its references as NIfTI."""
    cfg = ctx.config.dataset
    structures = ([Structure(n, tuple(p or ())) for n, p in cfg.structures.items()]
                  if cfg.structures else None)
    dataset = load_dataset(cfg.path, mask_pattern=cfg.mask_series, channels=cfg.channels,
                           regularize_slices=cfg.regularize_slices,
                           label_source=cfg.label_source, structures=structures,
                           overlap=cfg.overlap)
    for line in describe_dataset(dataset):
        log.info("%s", line)
    report = validate_dataset(dataset, strict=cfg.strict)
    if report.excluded:
        log.warning(report.summary())
    write_dataset_listing(ctx.run_dir / LISTING_FILE, dataset, report)
    held_out = draw_holdout([c.case_id for c in report.valid], cfg.holdout_fraction,
                            cfg.holdout_seed)
    write_holdout(ctx.run_dir, held_out, cfg.holdout_fraction, cfg.holdout_seed)
    reference = ctx.run_dir / REFERENCE_DIR
    write_references(reference, [c for c in report.valid if c.case_id in held_out])
    return StageResult(
        (LISTING_FILE, "holdout.json", REFERENCE_DIR),
        f"{len(report.valid)} valid case(s), {len(report.excluded)} excluded, "
        f"{len(held_out)} held out for evaluation",
    )


def write_references(folder: Path, cases: Sequence[Case]) -> None:
    """``labels/<case>.nii.gz`` and ``images/<case>.nii.gz`` (first channel) per case."""
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for case in cases:
        image, label = read_case(case)
        if label is None:
            raise DatasetError(f"held-out case {case.case_id} has no label", case.images[0])
        write_volume(label, folder / "labels" / f"{case.case_id}.nii.gz")
        first = Volume(image.array[:1], image.affine, image.meta)
        write_volume(first, folder / "images" / f"{case.case_id}.nii.gz")


# --- plan -------------------------------------------------------------------------------
def plan(ctx: StageContext) -> StageResult:
    """Fingerprint the training cases and plan (or take the plan file given)."""
    cfg = ctx.config.plan
    train_set, _ = split_dataset(ctx.run_dir)
    if cfg.file is not None:
        result = Plan.load(cfg.file)
        check_plan_labels(result, train_set.labels, cfg.file)
        outputs: tuple[str, ...] = (PLAN_FILE,)
    else:
        fingerprint = compute_fingerprint(train_set, workers=ctx.config.preprocess.workers)
        write_json(ctx.run_dir / "fingerprint.json", fingerprint.to_dict())
        device = ctx.config.train.device
        result = plan_dataset(
            train_set, fingerprint, partial_labels=cfg.partial_labels,
            memory_budget_gb=cfg.memory_budget_gb or planning_memory_gb(device))
        # records the automatic choices, so that network_3d/2d below count as set by hand;
        # the train stage fits the plan to the device and train.max_minutes
        result = plan_for_device(result, device)
        outputs = (PLAN_FILE, "fingerprint.json")
    result = with_network_changes(result, {"3d": cfg.network_3d, "2d": cfg.network_2d})
    result.save(ctx.run_dir / PLAN_FILE)
    spacing = "x".join(f"{s:g}" for s in result.target_spacing)
    patches = ", ".join(f"{name} patch {list(c.patch_size)}"
                        for name, c in result.configurations.items())
    return StageResult(outputs, f"spacing {spacing} mm; {patches}")


def with_network_changes(plan_: Plan, changes: dict[str, NetworkConfig]) -> Plan:
    """``plan_`` with the filters/batch size set in ``plan.network_<config>`` applied."""
    configurations = dict(plan_.configurations)
    for name, change in changes.items():
        updates = {k: v for k, v in (("filters", change.filters),
                                     ("batch_size", change.batch_size)) if v is not None}
        if updates and name in configurations:
            changed = replace(configurations[name], **updates)
            try:
                changed.check()
            except ConfigError as exc:
                raise ConfigError(f"plan.network_{name}: {exc}") from exc
            configurations[name] = changed
    return plan_.with_changes(configurations=configurations)


def check_plan_labels(plan_: Plan, labels: dict[int, str], source: Path) -> None:
    """A plan file must declare the dataset's label values."""
    if set(plan_.labels) != set(labels):
        raise ConfigError(f"plan labels {sorted(plan_.labels)} differ from the dataset's "
                          f"{sorted(labels)}", source)


# --- preprocess -------------------------------------------------------------------------
def preprocess(ctx: StageContext) -> StageResult:
    """Preprocess the training cases into ``preprocessed/<hash>/`` (unchanged cases reused)."""
    train_set, _ = split_dataset(ctx.run_dir)
    result = preprocess_dataset(train_set, Plan.load(ctx.run_dir / PLAN_FILE), ctx.run_dir,
                                workers=ctx.config.preprocess.workers)
    log.info(result.text())
    if len(result.failed) == len(result.results):
        raise DatasetError("every case failed to preprocess:\n" + result.text(), ctx.run_dir)
    remove_stale_caches(result.folder)
    index = result.folder / "index.json"
    return StageResult((str(index.relative_to(ctx.run_dir)),),
                       f"{result.computed} computed, {result.reused} reused, "
                       f"{len(result.failed)} failed")


def remove_stale_caches(current: Path) -> None:
    """Delete the run's cache folders of earlier plans/inputs (training must find one)."""
    for folder in current.parent.iterdir():
        if folder.is_dir() and folder != current:
            shutil.rmtree(folder)


# --- train ------------------------------------------------------------------------------
def train(ctx: StageContext) -> StageResult:
    """Train every configured fold; an interrupted fold resumes from its last checkpoint."""
    cfg = ctx.config.train
    settings = TrainSettings(
        iterations_per_epoch=cfg.iterations_per_epoch, validate_every=cfg.validate_every,
        optim=OptimSettings(name=cfg.optimizer, lr=cfg.learning_rate),
        num_workers=cfg.workers, seed=cfg.seed, n_folds=cfg.num_folds,
        precision=cfg.precision, fit_to_budget=cfg.fit_plan)
    outputs, lines = [], []
    for fold in cfg.folds:
        result = train_fold(ctx.run_dir, cfg.configuration, fold, epochs=cfg.epochs,
                            max_minutes=cfg.max_minutes, device=cfg.device, resume=ctx.resume,
                            settings=settings)
        outputs.append(str(result.checkpoint_last.relative_to(ctx.run_dir)))
        dice = ", ".join(f"{name} {value:.3f}" for name, value in result.final_dice.items())
        lines.append(f"fold {fold}: {result.epochs} epochs in {result.seconds / 60:.1f} min"
                     + (f", validation Dice {dice}" if dice else ""))
    return StageResult(tuple(outputs), "; ".join(lines))


# --- predict ----------------------------------------------------------------------------
def predict(ctx: StageContext) -> StageResult:
    """Predict the held-out cases (NIfTI, plus DICOM-SEG or RTSTRUCT for DICOM cases when
    asked) and ``predict.inputs``, from their source files onto their own grids."""
    cfg = ctx.config.predict
    predictor = Predictor.load(
        ctx.run_dir, folds=trained_folds(ctx), config=trained_configuration(ctx),
        device=cfg.device, settings=InferenceSettings(overlap=cfg.overlap, tta=cfg.tta))
    log.info("predicting with %s", predictor.describe())
    _, held_out = split_dataset(ctx.run_dir)
    out = ctx.run_dir / PREDICTIONS_DIR
    jobs = [Job(c.case_id, c, is_dicom=c.images[0].is_dir()) for c in held_out]
    batches = [(jobs, out / HOLDOUT_DIR, "nifti", cfg.uncertainty)]
    if cfg.format in DICOM_FORMATS:
        folder = DICOM_SEG_DIR if cfg.format == "dicom-seg" else RTSTRUCT_DIR
        batches.append(([j for j in jobs if j.is_dicom], out / folder, cfg.format, False))
    if cfg.inputs:
        channels = list(predictor.plan.channels.values())
        batches.append((discover_jobs(cfg.inputs, channels), out / EXTRA_DIR, cfg.format,
                        cfg.uncertainty))
    counts = []
    for batch, folder, fmt, uncertainty in batches:
        if batch:
            run_batch(predictor, batch, folder, fmt, uncertainty)
            counts.append(f"{len(batch)} to {folder.relative_to(ctx.run_dir)}")
    (out / HOLDOUT_DIR).mkdir(parents=True, exist_ok=True)
    return StageResult((PREDICTIONS_DIR,), "predicted " + (", ".join(counts) or "nothing"))


def run_batch(predictor: Predictor, jobs: Sequence[Job], folder: Path, fmt: str,
              uncertainty: bool = False) -> None:
    """Predict ``jobs`` into ``folder``; any failed case fails the stage, naming it."""
    options = BatchOptions(format=fmt, overwrite=True, uncertainty=uncertainty)
    results = predict_batch(predictor, jobs, folder, options)
    log.info(summary_table(results, predictor.label_names))
    failed = [f"{r.name}: {r.error}" for r in results if r.status == "failed"]
    if failed:
        raise InputError(f"{len(failed)} case(s) could not be predicted:\n" + "\n".join(failed),
                         folder)


# --- evaluate ---------------------------------------------------------------------------
def evaluate(ctx: StageContext) -> StageResult:
    """Compare the held-out predictions with their references; write the report."""
    _, held_out = split_dataset(ctx.run_dir)
    if not held_out:
        raise ConfigError("nothing to evaluate: dataset.holdout_fraction is 0")
    plan_ = Plan.load(ctx.run_dir / PLAN_FILE)
    result = evaluate_folders(
        ctx.run_dir / PREDICTIONS_DIR / HOLDOUT_DIR, ctx.run_dir / REFERENCE_DIR / "labels",
        ctx.run_dir / EVALUATION_DIR, labels={v: n for v, n in plan_.labels.items() if v != 0},
        nsd_tolerance=ctx.config.evaluate.nsd_tolerance_mm,
        images_dir=ctx.run_dir / REFERENCE_DIR / "images",
        regions=ctx.config.evaluate.regions, partial_labels=plan_.partial_labels,
        case_roles=case_roles(ctx.run_dir, trained_folds(ctx), held_out),
        modality=plan_.channels.get(0))
    if not result.complete:
        raise DatasetError(f"evaluation incomplete: failed {result.failed}, missing "
                           f"{list(result.missing_predictions)}", ctx.run_dir / EVALUATION_DIR)
    dice = ", ".join(f"{name} {stats['dice']['mean']:.3f}"
                     for name, stats in result.summary["per_class"].items())
    return StageResult((f"{EVALUATION_DIR}/summary.json", f"{EVALUATION_DIR}/per_case.csv"),
                       f"mean Dice {dice}")


def trained_configuration(ctx: StageContext) -> str | None:
    """The configuration trained (None for "auto": the one training chose, see
    ``medseg.inference.predictor``)."""
    name = ctx.config.train.configuration
    return None if name == "auto" else name


def trained_folds(ctx: StageContext) -> list[int | str]:
    """The configured folds, with "auto" resolved as training resolved it."""
    train_set, _ = split_dataset(ctx.run_dir)
    return [resolve_fold(f, len(train_set.cases)) for f in ctx.config.train.folds]


def case_roles(run_dir: Path, folds: Sequence[int | str], held_out: Sequence[Case]
               ) -> dict[str, list[str]]:
    """Which cases trained, which validated (checkpoint selection) and which are evaluated:
    the evaluated ones are held out before planning and took part in no choice."""
    train_set, _ = split_dataset(run_dir)
    ids = sorted(c.case_id for c in train_set.cases)
    splits_file = run_dir / "splits.json"
    splits = json.loads(splits_file.read_text()) if splits_file.is_file() else []
    validation = sorted({c for f in folds if f != "all" and int(f) < len(splits)
                         for c in splits[int(f)]["val"]})
    return {"training": [c for c in ids if c not in set(validation)],
            "validation (checkpoint selection)": validation,
            "evaluation (held out)": sorted(c.case_id for c in held_out)}


STAGE_NAMES = ("ingest", "plan", "preprocess", "train", "predict", "evaluate")


def standard_stages() -> list[Stage]:
    """The standard pipeline, in order."""
    return [
        Stage("ingest", ingest, section="dataset", inputs=_dataset_inputs),
        Stage("plan", plan, section="plan", needs=("ingest",), inputs=_plan_inputs),
        Stage("preprocess", preprocess, section="preprocess", needs=("ingest", "plan")),
        Stage("train", train, section="train", needs=("plan", "preprocess"),
              fresh=("train", "splits.json")),
        Stage("predict", predict, section="predict", needs=("ingest", "train"),
              inputs=_predict_inputs, fresh=(PREDICTIONS_DIR,)),
        Stage("evaluate", evaluate, section="evaluate", needs=("ingest", "predict"),
              fresh=(EVALUATION_DIR,)),
    ]


def _dataset_inputs(config: PipelineConfig) -> tuple[Path, ...]:
    return (config.dataset.path,)


def _predict_inputs(config: PipelineConfig) -> tuple[Path, ...]:
    return config.predict.inputs


def _plan_inputs(config: PipelineConfig) -> tuple[Path, ...]:
    return (config.plan.file,) if config.plan.file else ()
