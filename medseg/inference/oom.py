"""Out-of-memory retries for one case's sliding-window prediction.

A case that does not fit is retried rather than reported as failed: with half the windows
per forward pass (down to one), then (on a GPU) with the class accumulator in host
memory, then on the CPU. Only out-of-memory errors are retried; anything else, or an
out-of-memory error on the last attempt, propagates as before. Each retry logs one
warning naming the case and the new attempt.
"""

from __future__ import annotations

import copy
import gc
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

log = logging.getLogger(__name__)
T = TypeVar("T")

_OOM_MESSAGES = ("out of memory", "can't allocate memory", "unable to allocate")


@dataclass(frozen=True)
class Attempt:
    """How to try a case: windows per forward pass, device, accumulator in host memory."""

    batch_size: int
    device: torch.device
    host_accumulator: bool = False

    def describe(self) -> str:
        where = "host accumulator" if self.host_accumulator and self.device.type != "cpu" else ""
        return ", ".join(p for p in (f"batch {self.batch_size}", str(self.device), where) if p)


def attempts(batch_size: int, device: torch.device) -> list[Attempt]:
    """The retry ladder: ``batch_size``, halved down to 1; on a GPU then batch 1 with the
    accumulator in host memory, then the CPU."""
    ladder = [Attempt(batch_size, device)]
    while ladder[-1].batch_size > 1:
        ladder.append(Attempt(ladder[-1].batch_size // 2, device))
    if device.type != "cpu":
        ladder += [Attempt(1, device, host_accumulator=True),
                   Attempt(batch_size, torch.device("cpu"), host_accumulator=True)]
    return ladder


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA out-of-memory errors and failed host allocations."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, (RuntimeError, MemoryError)) and any(
        m in str(exc).lower() for m in _OOM_MESSAGES)


def release_memory(device: torch.device) -> None:
    """Give cached blocks back after a failed attempt (its tensors are garbage now)."""
    gc.collect()
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_with_retries(run: Callable[[Attempt], T], ladder: list[Attempt], case: str = "") -> T:
    """``run(attempt)`` for the first attempt of ``ladder`` that does not run out of memory."""
    for i, attempt in enumerate(ladder):
        error = None
        try:
            return run(attempt)
        except (RuntimeError, MemoryError) as exc:
            if i + 1 == len(ladder) or not is_out_of_memory(exc):
                raise
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        # outside the except block, so the traceback no longer holds the failed tensors
        release_memory(attempt.device)
        log.warning("%sout of memory with %s (%s); retrying with %s",
                    f"case {case}: " if case else "", attempt.describe(), error,
                    ladder[i + 1].describe())
    raise AssertionError("unreachable: the last attempt returns or raises")


def host_copy(network: nn.Module) -> nn.Module:
    """A CPU copy of ``network`` that allocates nothing on the network's own device (its
    parameters and buffers are copied to the host first and handed to ``deepcopy``)."""
    memo: dict[int, object] = {}
    for tensor in itertools.chain(network.parameters(), network.buffers()):
        host = tensor.detach().cpu()
        memo[id(tensor)] = (nn.Parameter(host, tensor.requires_grad)
                            if isinstance(tensor, nn.Parameter) else host)
    return copy.deepcopy(network, memo)
