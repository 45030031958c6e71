"""Pure helpers of the stages: the hold-out draw and plan network changes."""

from __future__ import annotations

import pytest

from medseg.core.errors import ConfigError
from medseg.pipeline.config import NetworkConfig
from medseg.pipeline.holdout import draw_holdout
from medseg.pipeline.stages import with_network_changes
from medseg.preprocess import Configuration, Plan

IDS = [f"case_{i:03d}" for i in range(10)]


def test_holdout_is_reproducible_and_order_independent():
    first = draw_holdout(IDS, 0.2, seed=0)
    assert len(first) == 2 and set(first) <= set(IDS)
    assert draw_holdout(list(reversed(IDS)), 0.2, seed=0) == first
    assert draw_holdout(IDS, 0.2, seed=1) != first


@pytest.mark.parametrize(
    ("n", "fraction", "expected"),
    [(10, 0.0, 0), (10, 0.2, 2), (1, 0.5, 0), (2, 0.5, 1), (3, 0.01, 1), (4, 0.99, 3)],
)
def test_holdout_size_leaves_a_training_case(n, fraction, expected):
    assert len(draw_holdout(IDS[:n], fraction, seed=0)) == expected


def _plan() -> Plan:
    config = Configuration(
        patch_size=(8, 8, 8), batch_size=2, spacing=(1.0, 1.0, 1.0),
        kernel_sizes=((3, 3, 3), (3, 3, 3)), strides=((1, 1, 1), (2, 2, 2)), filters=(8, 16))
    return Plan(dataset_name="t", labels={0: "bg", 1: "fg"}, channels={0: "MRI"},
                target_spacing=(1.0, 1.0, 1.0), normalization=({"scheme": "zscore_nonzero"},),
                configurations={"3d": config})


def test_network_changes_apply_to_the_named_configuration():
    changed = with_network_changes(_plan(), {"3d": NetworkConfig(filters=(4, 8), batch_size=5),
                                             "2d": NetworkConfig(batch_size=3)})
    config = changed.configuration("3d")
    assert config.filters == (4, 8) and config.batch_size == 5
    assert config.patch_size == (8, 8, 8)
    assert with_network_changes(_plan(), {"3d": NetworkConfig()}) == _plan()


def test_network_changes_are_checked():
    with pytest.raises(ConfigError, match=r"plan\.network_3d: .*one entry per level"):
        with_network_changes(_plan(), {"3d": NetworkConfig(filters=(4, 8, 16))})
