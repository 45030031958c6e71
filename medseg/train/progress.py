"""Training logs: metrics.csv, TensorBoard scalars and a progress.png of loss and Dice."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medseg.core.atomic import atomic_path, write_text

Row = Mapping[str, Any]


def write_metrics_csv(path: Path, rows: Sequence[Row]) -> None:
    """Rewrite ``metrics.csv`` atomically with one row per epoch."""
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def prepare_plotting() -> None:
    """Import matplotlib with its file-only backend (a second or more on a busy machine),
    so that the first :func:`plot_progress` is quick."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: F401


def plot_progress(path: Path, rows: Sequence[Row], class_names: Sequence[str]) -> None:
    """Loss (left axis) and validation Dice per class (right axis) against the epoch."""
    prepare_plotting()
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    epochs = [r["epoch"] for r in rows]
    ax.plot(epochs, [r["train_loss"] for r in rows], color="tab:blue", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    dice_ax = ax.twinx()
    for name in [*class_names, "mean"]:
        pts = [(r["epoch"], r[f"dice_{name}"]) for r in rows
               if _is_number(r.get(f"dice_{name}"))]
        if pts:
            style = "k--" if name == "mean" else "-"
            dice_ax.plot(*zip(*pts, strict=True), style, marker=".", label=f"Dice {name}")
    dice_ax.set_ylabel("validation Dice")
    dice_ax.set_ylim(0, 1)
    handles = ax.get_legend_handles_labels()[0] + dice_ax.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="center right", fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value)


class TensorBoardLog:
    """Scalars to ``tb/``; silently disabled when tensorboard is not installed."""

    def __init__(self, folder: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # pragma: no cover - tensorboard is a declared dependency
            self.writer = None
        else:
            self.writer = SummaryWriter(log_dir=str(folder))

    def log(self, row: Row) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "epoch" and _is_number(value):
                self.writer.add_scalar(key, value, int(row["epoch"]))
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
