"""Device and precision policy: bf16 fallback on pre-Ampere GPUs; denormal flushing only
where an entry point asks for it."""

from __future__ import annotations

import subprocess
import sys

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


DENORMAL_SURVIVES = """
import subprocess
import sys

import torch
{imports}
x = torch.tensor([1e-39], dtype=torch.float32)  # a float32 denormal
print(float(x * 1.0) != 0.0)
"""


def _denormal_kept(imports: str) -> bool:
    out = subprocess.run([sys.executable, "-c", DENORMAL_SURVIVES.format(imports=imports)],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True"


def test_importing_medseg_leaves_denormals_alone() -> None:
    # the host program's numerics are its own: importing the whole package changes nothing
    assert _denormal_kept("import medseg.models, medseg.train.api, medseg.inference.predictor")
    # the entry points' call does flush them (the reference: the same product, 0)
    assert not _denormal_kept("from medseg.models.runtime import flush_denormals\n"
                              "flush_denormals()")
