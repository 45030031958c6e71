"""Precision choice: bf16 on a GPU without bfloat16 falls back to float16, with a warning."""

from __future__ import annotations

import torch

from medseg.models import runtime
from medseg.models.runtime import autocast_dtype


def test_bf16_on_a_pre_ampere_gpu_falls_back_to_fp16(monkeypatch, caplog) -> None:
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))  # V100
    with caplog.at_level("WARNING"):
        assert autocast_dtype(cuda, "bf16") == torch.float16  # and the GradScaler turns on
    assert "no bfloat16 support" in caplog.text
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))  # H100
    assert autocast_dtype(cuda, "bf16") == torch.bfloat16
    assert autocast_dtype(cuda, "auto") == torch.float16 and autocast_dtype(cuda, "fp32") is None


def test_without_cuda_no_device_counts_as_bf16_capable() -> None:
    if not torch.cuda.is_available():
        assert not runtime.cuda_supports_bfloat16(torch.device("cuda"))
