"""Networks from the plan: output shapes for 3D/2D, deep supervision heads."""

from __future__ import annotations

import pytest
import torch

from medseg.core.errors import ConfigError
from medseg.models import build_network
from tests.sampling.synthetic import sphere_plan


@pytest.mark.parametrize("config,shape", [("3d", (2, 1, 24, 24, 24)), ("2d", (3, 1, 24, 24))])
def test_output_shape_eval_and_deep_supervision(config: str, shape: tuple[int, ...]) -> None:
    plan = sphere_plan(filters=(4, 8, 16, 32), deep_supervision=True)
    net = build_network(plan, config)
    x = torch.randn(shape)
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (shape[0], 3, *shape[2:])
    net.train()
    out = net(x)
    assert out.shape == (shape[0], 3, 3, *shape[2:])  # full resolution + 2 heads


def test_no_deep_supervision_returns_plain_logits_in_training() -> None:
    net = build_network(sphere_plan(deep_supervision=False), "3d").train()
    assert net(torch.randn(1, 1, 24, 24, 24)).shape == (1, 3, 24, 24, 24)


def test_unknown_configuration_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="3d_fullres"):
        build_network(sphere_plan(), "3d_fullres")
