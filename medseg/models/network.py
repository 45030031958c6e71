"""U-Nets built from a plan configuration (MONAI DynUNet)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from monai.networks.nets import DynUNet
from torch import nn

from medseg.core.errors import ConfigError

#: Deep-supervision heads below the full-resolution output (nnU-Net uses all but the two
#: lowest resolutions; two extra heads cover the useful ones for 3-5 level networks).
MAX_DEEP_SUPERVISION_HEADS = 2
#: DynUNet needs an input block, at least one downsampling block and a bottleneck.
MIN_LEVELS = 3


class PlanLike(Protocol):
    """Anything with the documented ``to_dict()`` plan format (``medseg.preprocess.Plan``)."""

    def to_dict(self) -> dict[str, Any]: ...


def configuration(plan: PlanLike, config_name: str) -> dict[str, Any]:
    """The named configuration of a plan, or ConfigError listing the available ones."""
    configs = plan.to_dict().get("configurations", {})
    if config_name not in configs:
        raise ConfigError(
            f"plan has no configuration {config_name!r} (available: {', '.join(sorted(configs))})"
        )
    return dict(configs[config_name])


def network_shape(plan: PlanLike) -> tuple[int, int]:
    """(input channels, output classes) of networks for this plan."""
    d = plan.to_dict()
    return len(d["channels"]), len(d["labels"])


def deep_supervision_heads(config: Mapping[str, Any]) -> int:
    """Number of extra low-resolution outputs (0 when deep supervision is off)."""
    if not config.get("deep_supervision", False):
        return 0
    return max(0, min(MAX_DEEP_SUPERVISION_HEADS, len(config["strides"]) - 2))


def build_network(plan: PlanLike, config_name: str) -> nn.Module:
    """A DynUNet from the configuration's kernel sizes, strides and filters.

    In training mode a deep-supervised network returns ``(B, 1 + heads, K, *patch)``; in
    eval mode it returns ``(B, K, *patch)``.
    """
    config = configuration(plan, config_name)
    in_channels, n_classes = network_shape(plan)
    kernels = [list(k) for k in config["kernel_sizes"]]
    strides = [list(s) for s in config["strides"]]
    dims = len(config["patch_size"])
    if len(strides) < MIN_LEVELS:
        raise ConfigError(f"configuration {config_name!r}: DynUNet needs at least "
                          f"{MIN_LEVELS} levels (kernel_sizes/strides entries), got "
                          f"{len(strides)}")
    if len(kernels) != len(strides) or any(len(k) != dims for k in kernels + strides):
        raise ConfigError(
            f"configuration {config_name!r}: kernel_sizes and strides must be lists of the same "
            f"length with {dims} values each"
        )
    filters = config.get("filters")
    if filters is not None and len(filters) != len(strides):
        raise ConfigError(f"configuration {config_name!r}: needs one filter count per level")
    heads = deep_supervision_heads(config)
    return DynUNet(
        spatial_dims=dims,
        in_channels=in_channels,
        out_channels=n_classes,
        kernel_size=kernels,
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=filters,
        norm_name=("INSTANCE", {"affine": True}),
        act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
        deep_supervision=heads > 0,
        deep_supr_num=max(heads, 1),
        res_block=bool(config.get("residual", False)),
    )
