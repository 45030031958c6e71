"""Networks built from the plan (MONAI DynUNet) and checkpoint save/load.

Importing it changes no process-wide state (denormal flushing is set by the training and
prediction entry points: :func:`medseg.models.runtime.flush_denormals`).
"""

from medseg.models.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from medseg.models.network import build_network, configuration, network_shape

__all__ = [
    "CHECKPOINT_FORMAT",
    "build_network",
    "configuration",
    "load_checkpoint",
    "load_weights",
    "network_shape",
    "save_checkpoint",
]
