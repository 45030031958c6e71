"""Data-parallel training under ``torchrun`` (PyTorch DistributedDataParallel).

``torchrun`` starts one process per device and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_distributed` turns them into a :class:`DistContext` and joins the process
group (NCCL on CUDA, gloo on CPU). Launched without them, the context is a single process
and every method is a no-op, so the training loop has one code path.

The rules (docs/scaling-out.md):

- every rank samples its own batches (sampler seed + rank) and DDP averages the
  gradients, so one optimiser step sees ``batch_size x world_size`` patches;
- the learning rate is the single-process one (no linear scaling);
- rank 0 alone writes splits, checkpoints, metrics, progress.png and TensorBoard, and runs
  validation while the other ranks wait at a barrier;
- under a time budget, rank 0 decides before every step whether it still fits and which
  LR it gets, and broadcasts both, so all ranks stop at the same step;
- ``--resume``: every rank loads the same ``checkpoint_last.pt`` (the run folder must be
  on a file system all nodes see).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from medseg.core.errors import ConfigError

T = TypeVar("T")
log = logging.getLogger(__name__)

#: How long a rank waits at a collective (e.g. while rank 0 validates) before failing.
COLLECTIVE_TIMEOUT = timedelta(minutes=60)
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistContext:
    """This process's place in a training job; the defaults describe a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None  # "nccl" | "gloo"; None: not distributed

    @property
    def is_distributed(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """True on the rank that writes files and validates (rank 0)."""
        return self.rank == 0

    def device(self, requested: torch.device) -> torch.device:
        """The rank's device: ``cuda:LOCAL_RANK`` under NCCL, else ``requested``."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else requested

    def sampler_seed(self, seed: int) -> int:
        """Each rank draws different patches: ``seed + rank``."""
        return seed + self.rank

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in DistributedDataParallel (gradients averaged across ranks)."""
        if not self.is_distributed:
            return model
        device_ids = [self.local_rank] if self.backend == "nccl" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def barrier(self) -> None:
        """Wait until every rank arrives."""
        if self.is_distributed:
            if self.backend == "nccl":
                torch_dist.barrier(device_ids=[self.local_rank])
            else:
                torch_dist.barrier()

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (any picklable value)."""
        if not self.is_distributed:
            return value
        box = [value]
        torch_dist.broadcast_object_list(box, src=0, device=self._collective_device())
        return box[0]

    def broadcast_values(self, values: list[float]) -> list[float]:
        """Rank 0's numbers on every rank: one small tensor broadcast (cheap enough to call
        before every training step, e.g. for the budget's stop decision and the LR)."""
        if not self.is_distributed:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self._collective_device())
        torch_dist.broadcast(tensor, src=0)
        return [float(v) for v in tensor.tolist()]

    def mean(self, value: float) -> float:
        """The mean of ``value`` over all ranks."""
        if not self.is_distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self._collective_device())
        torch_dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size

    def main_first(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0, then on the others (for create-once files like splits)."""
        if self.is_main:
            result = fn()
            self.barrier()
            return result
        self.barrier()
        return fn()

    def _collective_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else \
            torch.device("cpu")


SINGLE_PROCESS = DistContext()


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper (itself otherwise): what checkpoints store."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def torchrun_environment(env: Mapping[str, str] | None = None) -> DistContext | None:
    """The rank layout torchrun put in ``env`` (None when not launched by torchrun)."""
    env = os.environ if env is None else env
    if not all(name in env for name in TORCHRUN_VARIABLES):
        return None
    try:
        rank, world, local = (int(env[name]) for name in TORCHRUN_VARIABLES)
        local_world = int(env.get("LOCAL_WORLD_SIZE", world))
    except ValueError as exc:
        raise ConfigError(f"invalid torchrun environment variable: {exc}") from None
    if not (0 <= rank < world and 0 <= local < local_world):
        raise ConfigError(f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world} "
                          f"LOCAL_RANK={local} LOCAL_WORLD_SIZE={local_world}")
    return DistContext(rank, world, local, local_world)


def check_launch(context: DistContext, env: Mapping[str, str] | None = None) -> None:
    """Refuse a single-process context in a multi-process torchrun job: every rank would
    train alone and write the same files."""
    layout = torchrun_environment(env)
    if not context.is_distributed and layout is not None and layout.world_size > 1:
        raise ConfigError(f"launched by torchrun with {layout.world_size} processes, but "
                          "only `medseg train` trains data-parallel; run other commands "
                          "without torchrun")


def init_distributed(device: str = "auto", env: Mapping[str, str] | None = None
                     ) -> DistContext:
    """Join the torchrun process group: NCCL when ``device`` is CUDA, else gloo.

    Returns :data:`SINGLE_PROCESS` when not launched by torchrun or with one process.
    """
    layout = torchrun_environment(env)
    if layout is None or layout.world_size == 1:
        return SINGLE_PROCESS
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if torch.cuda.device_count() < layout.local_world_size:
            raise ConfigError(f"{layout.local_world_size} processes per node but only "
                              f"{torch.cuda.device_count()} CUDA device(s)")
        torch.cuda.set_device(layout.local_rank)
    backend = "nccl" if use_cuda else "gloo"
    torch_dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    log.info("joined the %s process group: rank %d of %d (local rank %d)", backend,
             layout.rank, layout.world_size, layout.local_rank)
    if layout.rank != 0:
        logging.getLogger("medseg").setLevel(logging.WARNING)  # one rank reports
    return DistContext(layout.rank, layout.world_size, layout.local_rank,
                       layout.local_world_size, backend)


def shutdown(context: DistContext) -> None:
    """Leave the process group (no-op for a single process)."""
    if context.is_distributed and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


@contextlib.contextmanager
def distributed(device: str = "auto") -> Iterator[DistContext]:
    """:func:`init_distributed` for the length of a ``with`` block."""
    context = init_distributed(device)
    try:
        yield context
    finally:
        shutdown(context)
