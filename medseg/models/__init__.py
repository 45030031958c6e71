"""Networks built from the plan (MONAI DynUNet) and checkpoint save/load.

Importing this package flushes denormal floats to zero on CPU: denormals that appear
during training made CPU steps up to ~100x slower on the development machine. The flag
is per thread and inherited only by threads created later, so it must be set before torch
starts its intra-op thread pool (setting it later, e.g. when training starts, leaves the
pool's threads slow).
"""

import torch

from medseg.models.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from medseg.models.network import build_network, configuration, network_shape

torch.set_flush_denormal(True)

__all__ = [
    "CHECKPOINT_FORMAT",
    "build_network",
    "configuration",
    "load_checkpoint",
    "load_weights",
    "network_shape",
    "save_checkpoint",
]
