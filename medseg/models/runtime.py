"""Where and in which precision networks run: the one device and precision policy that
training, prediction and planning share.

- device ``"auto"``: CUDA when available, else the CPU; asking for CUDA without one is a
  :class:`ConfigError`;
- precision ``"auto"``: float16 autocast on CUDA (with a gradient scaler in training),
  bfloat16 on CPUs with native bfloat16 kernels (AVX512-BF16 / AMX: ~3x faster 3D
  convolutions), float32 elsewhere; ``"fp32"``, ``"bf16"`` and ``"fp16"`` force one
  (``"bf16"`` on a GPU without bfloat16, before Ampere, falls back to float16).
"""

from __future__ import annotations

import functools
import logging

import torch

from medseg.core.errors import ConfigError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def flush_denormals() -> None:
    """Flush denormal floats to zero on CPU, in this thread and the threads torch creates
    after it. Denormals that appear during training made CPU steps up to ~100x slower on
    the development machine. The flag is per thread and inherited only by threads created
    later, so medseg's training and prediction entry points (the ``medseg`` commands,
    :func:`medseg.train.api.train_fold`, :class:`medseg.inference.predictor.Predictor`,
    the loader's workers) call it before torch starts its thread pool; a host program that
    has already run torch work should call it first. Nothing in medseg sets it at import."""
    torch.set_flush_denormal(True)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present; anything else is parsed by torch."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from exc
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but no CUDA device is available")
    return resolved


@functools.cache
def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_supports_bfloat16() -> bool:
    """True when oneDNN has native bfloat16 kernels on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cuda_supports_bfloat16(device: torch.device) -> bool:
    """True when ``device`` computes bfloat16 natively (compute capability 8.0, Ampere, on)."""
    try:
        return torch.cuda.get_device_capability(device)[0] >= 8
    except (AssertionError, RuntimeError):  # no CUDA here
        return False


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """Mixed-precision type for ``device`` under ``precision`` (None: full float32)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r} (one of {', '.join(PRECISIONS)})")
    if precision == "fp32":
        return None
    if precision == "bf16":
        if device.type == "cuda" and not cuda_supports_bfloat16(device):
            # torch.autocast would warn and silently run float32 instead
            log.warning("bf16 requested but %s has no bfloat16 support (pre-Ampere): "
                        "using float16 with gradient scaling", device)
            return torch.float16
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_supports_bfloat16():
        return torch.bfloat16
    return None


def describe_device(device: torch.device) -> str:
    """A stable name of the hardware a timing was taken on (step times are only reused
    on the same kind of device, with the same number of threads)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{torch.cuda.get_device_name(index)}"
    return f"cpu:{_cpu_model()}:{torch.get_num_threads()} threads"


def device_memory_gb(device: torch.device) -> float | None:
    """Total memory of a CUDA device in GB (None on the CPU)."""
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_properties(index).total_memory / 1024**3


@functools.cache
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
