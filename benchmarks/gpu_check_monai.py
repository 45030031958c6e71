"""MONAI's recipe for the GPU check's side-by-side rates (same network, same device).

* training step: the network built by medseg from the plan (MONAI's DynUNet), MONAI's
  ``DiceCELoss`` over every deep-supervision head (weights 1, 1/2, 1/4, as MONAI's DynUNet
  tutorial), ``torch.autocast`` + ``GradScaler``, SGD;
* data loader: ``CacheDataset`` (foreground/background indices precomputed with
  ``FgBgToIndicesd`` in the cache pass) + ``RandCropByPosNegLabeld`` + the augmentation of
  ``benchmarks/sampling.py``, a ``DataLoader`` with the same worker count as medseg's;
* prediction: ``sliding_window_inference`` (Gaussian, overlap 0.5) under autocast on
  volumes already in memory, then arg-max, as medseg's in-process figure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.data import CacheDataset, DataLoader
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from sampling import monai_transforms  # benchmarks/sampling.py: the same MONAI chain


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(fn: Callable[[], object], n: int, device: torch.device, warmup: int = 2) -> float:
    """Calls of ``fn`` per second over ``n`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return n / (time.perf_counter() - start)


def monai_step(network: torch.nn.Module, device: torch.device, amp: torch.dtype | None
               ) -> Callable[[torch.Tensor, torch.Tensor], float]:
    """One training step of MONAI's DynUNet recipe, as a closure over (image, label)."""
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.SGD(network.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)

    def step(image: torch.Tensor, label: torch.Tensor) -> float:
        network.train()
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            output = network(image)
        heads = torch.unbind(output, 1) if output.ndim == image.ndim + 1 else (output,)
        loss = sum(0.5**i * loss_fn(h.float(), label) for i, h in enumerate(heads))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return float(loss.detach())

    return step


def monai_loader(images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                 patch: Sequence[int], batch_size: int, workers: int, batches: int
                 ) -> DataLoader:
    """MONAI's augmented patch loader over in-memory preprocessed cases."""
    items = [{"image": i, "label": lab} for i, lab in zip(images, labels, strict=True)]
    dataset = CacheDataset(items, monai_transforms(list(patch), augment=True, indices=True),
                           progress=False, num_workers=max(workers, 1))
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True,
                                             num_samples=batches * batch_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=torch.cuda.is_available(),
                      persistent_workers=workers > 0)


def monai_predict(network: torch.nn.Module, images: Sequence[np.ndarray],
                  patch: Sequence[int], device: torch.device, amp: torch.dtype | None
                  ) -> list[np.ndarray]:
    """Arg-max label maps of preprocessed images with MONAI's sliding window."""
    network.eval()
    out = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp,
                                                enabled=amp is not None):
        for image in images:
            x = torch.from_numpy(np.ascontiguousarray(image))[None].to(device)
            logits = sliding_window_inference(x, list(patch), 2, network, overlap=0.5,
                                              mode="gaussian")
            out.append(logits[0].argmax(0).to(torch.uint8).cpu().numpy())
    return out
