"""Turn prediction inputs (files, folders of files, DICOM series or study folders) into
named jobs, one per output.

Naming: a NIfTI input keeps its file name; other files use their stem; a DICOM series is
named after its folder when it has the folder to itself, else folder + series
description; multi-channel cases (``<case>_0000.nii.gz``, ...) after the shared prefix, and
so is a one-channel ``<case>_0000.nii.gz`` (nnU-Net's naming).
Names are made unique within a batch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from medseg.core.errors import InputError, ReadError
from medseg.data import Case
from medseg.io import list_series
from medseg.io.dicom_series import SeriesInfo

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Job:
    """One case to predict: what to read and the output name (no folder, no suffix)."""

    name: str
    case: Case
    is_dicom: bool = False
    keep_file_name: str | None = None  # a NIfTI input's own file name, reused for the output


def discover_jobs(
    inputs: Sequence[str | Path], channel_names: Sequence[str], series: str | None = None,
    regularize: bool = False,
) -> list[Job]:
    """Jobs for every input path; ``series`` picks DICOM series by UID or description;
    ``regularize`` reads irregular DICOM series resampled onto a regular grid."""
    jobs: list[Job] = []
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            raise ReadError("input not found", path)
        if path.is_file():
            jobs.extend(_file_jobs([path], len(channel_names)))
        elif volume_files(path):
            jobs.extend(_file_jobs(volume_files(path), len(channel_names)))
        else:
            jobs.extend(_dicom_jobs(path, channel_names, series))
    if not jobs:
        raise InputError(f"no images found in {', '.join(str(p) for p in inputs)}")
    if regularize:
        jobs = [replace(j, case=replace(j.case, regularize=True)) for j in jobs]
    return unique_names(jobs)


def volume_files(folder: Path) -> list[Path]:
    """Image files (NIfTI, NRRD, MetaImage) directly inside ``folder``, sorted."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and _suffix(p.name))


def strip_suffix(name: str) -> str:
    """File name without its image suffix (``case.nii.gz`` -> ``case``)."""
    suffix = _suffix(name)
    return name[: -len(suffix)] if suffix else Path(name).stem


def safe_name(text: str) -> str:
    """A file-system friendly version of ``text`` (spaces and symbols become ``_``)."""
    return _UNSAFE.sub("_", text.strip()).strip("_") or "series"


def unique_names(jobs: Iterable[Job]) -> list[Job]:
    """Append ``_2``, ``_3``, ... to repeated names (the first keeps its name)."""
    seen: dict[str, int] = {}
    out = []
    for job in jobs:
        key = job.name.lower()
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:
            job = Job(f"{job.name}_{seen[key]}", job.case, job.is_dicom, None)
        out.append(job)
    return out


def series_for_channel(infos: Sequence[SeriesInfo], channel: str) -> list[SeriesInfo]:
    """Series that can feed a model channel: same description, else the same modality."""
    by_description = [s for s in infos if _squash(s.description) == _squash(channel)]
    if by_description:
        return by_description
    wanted = modality_of_channel(channel)
    return [s for s in infos if s.modality.upper() == wanted]


def modality_of_channel(channel: str) -> str:
    """DICOM Modality expected for a plan channel name (CT, PT, else MR)."""
    name = channel.strip().upper()
    if name == "CT":
        return "CT"
    return "PT" if name in ("PET", "PT") else "MR"


# --- files -----------------------------------------------------------------------------------


def _file_jobs(files: Sequence[Path], n_channels: int) -> list[Job]:
    if n_channels == 1:
        return [_single_file_job(p) for p in files]
    groups: dict[str, list[Path]] = {}
    for path in files:
        match = _CHANNEL_SUFFIX.match(strip_suffix(path.name))
        key = match["case"] if match else strip_suffix(path.name)
        groups.setdefault(key, []).append(path)
    return [Job(safe_name(name), Case(name, tuple(sorted(paths)), None))
            for name, paths in groups.items()]


def _single_file_job(path: Path) -> Job:
    """A one-channel case; ``<case>_0000.nii.gz`` (nnU-Net's channel naming) is ``<case>``."""
    name = strip_suffix(path.name)
    match = _CHANNEL_SUFFIX.match(name)
    if match and match["channel"] == "0000":
        return Job(safe_name(match["case"]), Case(match["case"], (path,), None))
    keep = path.name if path.name.lower().endswith(NIFTI_SUFFIXES) else None
    return Job(name, Case(name, (path,), None), keep_file_name=keep)


def _suffix(name: str) -> str:
    lower = name.lower()
    return next((s for s in VOLUME_SUFFIXES if lower.endswith(s)), "")


# --- DICOM -----------------------------------------------------------------------------------


def _dicom_jobs(folder: Path, channels: Sequence[str], series: str | None) -> list[Job]:
    infos = list_series(folder)
    if series is not None:
        chosen = _select(infos, series, folder)
        return [_series_job(s, infos) for s in chosen]
    if len(channels) == 1:
        chosen = series_for_channel(infos, channels[0])
        if not chosen:
            raise InputError(
                f"no series matches the model's channel {channels[0]!r} "
                f"(found: {_listing(infos)}); choose one with --series", folder)
        return [_series_job(s, infos) for s in chosen]
    return _multichannel_jobs(infos, channels, folder)


def _select(infos: Sequence[SeriesInfo], selector: str, folder: Path) -> list[SeriesInfo]:
    """Series whose UID equals ``selector`` or whose description matches it."""
    for match in (lambda s: s.uid == selector.strip(),
                  lambda s: s.description.strip().lower() == selector.strip().lower(),
                  lambda s: selector.strip().lower() in s.description.lower()):
        hits = [s for s in infos if match(s)]
        if hits:
            return hits
    raise InputError(f"no series matches --series {selector!r}; available: {_listing(infos)}",
                     folder)


def _series_job(info: SeriesInfo, infos: Sequence[SeriesInfo]) -> Job:
    alone = sum(1 for s in infos if s.folder == info.folder) == 1
    name = info.folder.name if alone else f"{info.folder.name}_{info.description}"
    case = Case(safe_name(name), (info.folder,), None, image_series=(info.uid,))
    return Job(safe_name(name), case, is_dicom=True)


def _multichannel_jobs(
    infos: Sequence[SeriesInfo], channels: Sequence[str], folder: Path
) -> list[Job]:
    """One job per study (series grouped by parent folder) with a series for every channel."""
    studies: dict[Path, list[SeriesInfo]] = {}
    for info in infos:
        studies.setdefault(info.folder.parent, []).append(info)
    jobs = []
    for study, members in studies.items():
        picks = [series_for_channel(members, c) for c in channels]
        if any(len(p) != 1 for p in picks):
            counts = ", ".join(f"{c}: {len(p)}" for c, p in zip(channels, picks, strict=True))
            raise InputError(f"study needs exactly one series per model channel ({counts}); "
                             f"found: {_listing(members)}", study)
        name = safe_name(study.name)
        case = Case(name, tuple(p[0].folder for p in picks), None,
                    image_series=tuple(p[0].uid for p in picks))
        jobs.append(Job(name, case, is_dicom=True))
    if not jobs:
        raise InputError("no DICOM study found", folder)
    return jobs


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _listing(infos: Iterable[SeriesInfo]) -> str:
    return "; ".join(f"'{s.description}' ({s.modality}, {s.folder.name})" for s in infos)
