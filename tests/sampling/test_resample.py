"""Resampling through torch's 2D kernel agrees with 3D/2D ``F.grid_sample``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medseg.sampling.resample import resample, source_coordinates


def reference(image: torch.Tensor, label: torch.Tensor, coords: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``F.grid_sample`` (zeros, align_corners=False) at the same voxel coordinates."""
    shape = coords.shape[2:]
    d = len(shape)
    size = torch.tensor(shape, dtype=coords.dtype).view(1, d, *[1] * d)
    grid = ((2 * coords + 1) / size - 1).movedim(1, -1).flip(-1)
    out_image = F.grid_sample(image, grid, mode="bilinear", align_corners=False)
    out_label = F.grid_sample(label.float(), grid, mode="nearest", align_corners=False)
    return out_image, out_label.to(label.dtype)


@pytest.mark.parametrize("shape", [(7, 9, 5), (16, 20, 12), (12, 10)])
def test_resample_matches_grid_sample_inside_and_outside_the_volume(
    shape: tuple[int, ...],
) -> None:
    g = torch.Generator().manual_seed(0)
    d, k = len(shape), 4
    matrices = torch.eye(d) * torch.tensor([0.7, 1.0, 1.4, 1.2]).view(k, 1, 1)
    matrices = matrices + 0.3 * torch.randn(k, d, d, generator=g)
    offsets = 2 * torch.randn(k, d, *shape, generator=g)  # reach well past every border
    image = torch.rand(k, 2, *shape, generator=g)
    label = (torch.rand(k, 1, *shape, generator=g) * 3).to(torch.uint8)
    out_image, out_label = resample(image, label, matrices, offsets)
    ref_image, ref_label = reference(image, label, source_coordinates(matrices, shape) + offsets)
    assert out_label.dtype == torch.uint8 and out_image.shape == image.shape
    torch.testing.assert_close(out_image, ref_image, atol=1e-4, rtol=0)
    assert (out_label != ref_label).float().mean() < 1e-3  # only exact .5 ties may differ


def test_identity_coordinates_are_the_voxel_indices_and_resample_is_identity() -> None:
    shape = (5, 6, 4)
    coords = source_coordinates(torch.eye(3)[None], shape)
    expected = torch.stack(torch.meshgrid(*[torch.arange(s) for s in shape], indexing="ij"))
    torch.testing.assert_close(coords[0], expected.float())
    image, label = torch.rand(1, 1, *shape), torch.randint(0, 3, (1, 1, *shape))
    out_image, out_label = resample(image, label, torch.eye(3)[None])
    torch.testing.assert_close(out_image, image, atol=1e-5, rtol=0)
    assert torch.equal(out_label, label)


def test_mirroring_is_a_negated_matrix_column() -> None:
    shape = (6, 7, 5)
    image, label = torch.rand(1, 1, *shape), torch.randint(0, 3, (1, 1, *shape))
    out_image, out_label = resample(image, label, torch.diag(torch.tensor([1.0, -1.0, 1.0]))[None])
    torch.testing.assert_close(out_image, image.flip(3), atol=1e-5, rtol=0)
    assert torch.equal(out_label, label.flip(3))


@pytest.mark.parametrize("shape", [(9, 7, 6), (10, 8)])
def test_affine_resampling_without_offsets_matches_grid_sample(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(1)
    d = len(shape)
    matrices = torch.eye(d) * 1.2 + 0.4 * torch.randn(3, d, d, generator=g)
    image = torch.rand(3, 1, *shape, generator=g)
    label = (torch.rand(3, 1, *shape, generator=g) * 4).to(torch.uint8)
    out_image, out_label = resample(image, label, matrices)
    ref_image, ref_label = reference(image, label, source_coordinates(matrices, shape))
    torch.testing.assert_close(out_image, ref_image, atol=1e-4, rtol=0)
    assert (out_label != ref_label).float().mean() < 1e-3
