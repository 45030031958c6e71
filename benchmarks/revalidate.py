"""Re-score a fold's final checkpoint on its validation cases with partial-label scoring
(a class absent from a case's reference is not scored there), as medseg's own final
validation does with partial_labels on. Prints one JSON line.

    python benchmarks/revalidate.py RUN CONFIG FOLD   # e.g. runoff 2d 0 (docs/benchmarks.md)
"""
import json
import sys
from pathlib import Path

import torch

from medseg.models.checkpoint import load_checkpoint, load_weights
from medseg.models.network import build_network
from medseg.models.runtime import flush_denormals
from medseg.preprocess import Plan, open_cache
from medseg.train.validation import validate

run, config, fold = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
flush_denormals()
folder = run / "train" / config / f"fold_{fold}"
plan = Plan.load(folder / "plan.json")
ckpt = load_checkpoint(folder / "checkpoint_last.pt")
model = build_network(plan, config)
load_weights(model, ckpt)
splits = json.loads((run / "splits.json").read_text())
cases = splits[int(fold)]["val"]
result = validate(model, open_cache(run), cases, plan.configuration(config).to_dict(),
                  plan.n_classes, torch.device("cpu"), partial_labels=True)
names = [plan.labels[v] for v in plan.label_values if v != 0]
dice = dict(zip(names, result.class_dice, strict=True))
print(json.dumps({"run": str(run), "partial_labels_trained": plan.partial_labels,
                  "cases": len(result.case_dice), "dice": dice, "mean": result.mean_dice}))
