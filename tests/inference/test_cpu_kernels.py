"""oneDNN for every 3D convolution: same logits as PyTorch's own kernel choice."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import DynUNet

from medseg.inference.cpu_kernels import OneDNNConv3d, onednn_available, use_onednn_convolutions

pytestmark = pytest.mark.skipif(not onednn_available(), reason="PyTorch built without oneDNN")


def small_unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return DynUNet(3, 1, 3, [[3, 3, 3]] * 3, [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                   [[2, 2, 2]] * 2, filters=[4, 8, 16],
                   norm_name=("INSTANCE", {"affine": True}), res_block=True).eval()


def test_switched_network_gives_the_same_logits_and_keeps_its_state() -> None:
    net = small_unet()
    x = torch.randn(1, 1, 16, 12, 20)  # batch 1, one input channel: PyTorch's im2col path
    with torch.inference_mode():
        reference = net(x)
    keys = list(net.state_dict())
    switched = use_onednn_convolutions(net)
    assert switched == sum(isinstance(m, OneDNNConv3d) for m in net.modules()) > 0
    with torch.inference_mode():
        torch.testing.assert_close(net(x), reference, rtol=1e-4, atol=1e-5)
    assert list(net.state_dict()) == keys  # checkpoints load as before


def test_other_inputs_take_pytorchs_own_path() -> None:
    conv = torch.nn.Conv3d(2, 3, 3, padding="same")
    reference = conv(torch.ones(1, 2, 5, 5, 5))
    use_onednn_convolutions(conv)
    torch.testing.assert_close(conv(torch.ones(1, 2, 5, 5, 5)), reference)  # "same" padding
    half = conv.to(torch.bfloat16)
    assert half(torch.ones(1, 2, 5, 5, 5, dtype=torch.bfloat16)).dtype == torch.bfloat16
