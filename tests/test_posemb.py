"""Positional embeddings at a grid other than the trained one: values, not shapes.

Bicubic resizing is linear and separable, and each output's weights sum to 1, so resizing a
learned 2D row + column table one axis at a time must equal resizing the full grid of sums;
a 1D table must come out as resize_grid of its grid; sinusoids must be the formula itself.
"""

from __future__ import annotations

import math

import pytest
import torch
from einops import rearrange

from zoo.layers import resize_grid
from zoo.registry import build, builtin_dir, load_file

DIM = 8
GRIDS = [((4, 4), (6, 6)), ((4, 4), (3, 3)), ((4, 6), (7, 3)), ((5, 5), (5, 9)), ((6, 6), (2, 2))]


@pytest.fixture(autouse=True)
def plugins() -> None:
    for f in sorted((builtin_dir() / "posemb").glob("*.py")):
        load_file(f)


def posemb(spec: str | dict, grid: tuple[int, int], prefix: int = 1) -> torch.nn.Module:
    """The plugin with every learned value random (the defaults start near zero)."""
    torch.manual_seed(0)
    module = build("posemb", spec, path="model.posemb", dim=DIM, grid_size=grid,
                   num_prefix_tokens=prefix)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
    return module


def added(module: torch.nn.Module, grid: tuple[int, int], prefix: int = 1) -> torch.Tensor:
    """What the module adds to the tokens at `grid`: [prefix + gh*gw, C]."""
    with torch.no_grad():
        return module(torch.zeros(1, prefix + grid[0] * grid[1], DIM), grid)[0]


@pytest.mark.parametrize("trained, new", GRIDS)
def test_learned_2d_resizes_the_grid_of_sums(trained, new):
    """Resizing row and col separately equals resize_grid of row[i] + col[j] at every (i, j)."""
    m = posemb("learned_2d", trained)
    grid = m.row[:, None] + m.col[None]  # [gh, gw, C]
    with torch.no_grad():
        expected = rearrange(resize_grid(grid, new), "h w c -> (h w) c")
    out = added(m, new)
    assert out[0].eq(0).all()  # [CLS] gets no position
    torch.testing.assert_close(out[1:], expected, rtol=1e-5, atol=1e-5)


def test_learned_2d_rows_stay_distinct_at_a_new_grid():
    """The reported bug: at a new size every row got the same embedding."""
    m = posemb("learned_2d", (4, 4))
    for new in ((6, 6), (3, 3), (8, 2)):
        table = added(m, new)[1:].view(*new, DIM)
        rows = table[:, 0]  # column 0 of every row
        gaps = (rows[:, None] - rows[None]).norm(dim=-1)  # [gh, gh]
        off_diagonal = gaps[~torch.eye(new[0], dtype=torch.bool)]
        assert off_diagonal.min() > 1e-3, new


@pytest.mark.parametrize("trained, new", GRIDS)
def test_learned_1d_resizes_its_grid_along_each_axis_alike(trained, new):
    """The patch table is resize_grid of its [gh, gw] grid; transposing the grid (and the
    target) transposes the result, so neither axis is resized differently from the other."""
    m = posemb("learned_1d", trained)
    gh, gw = trained
    grid = m.pos_embed[0, 1:].view(gh, gw, DIM)
    with torch.no_grad():
        expected = resize_grid(grid, new)
        twin = posemb("learned_1d", (gw, gh))
        twin.pos_embed.copy_(torch.cat([m.pos_embed[:, :1],
                                        grid.transpose(0, 1).reshape(1, -1, DIM)], dim=1))
    out = added(m, new)
    torch.testing.assert_close(out[0], m.pos_embed[0, 0].detach())  # [CLS] kept as it is
    torch.testing.assert_close(out[1:].view(*new, DIM), expected, rtol=0, atol=0)
    swapped = added(twin, new[::-1])[1:].view(*new[::-1], DIM).transpose(0, 1)
    torch.testing.assert_close(swapped, expected, rtol=1e-5, atol=1e-5)


def test_learned_1d_resizes_to_a_grid_one_patch_wide():
    """Antialiased bicubic resizing to width 1 repeats the first row in PyTorch; resize_grid
    transposes such grids."""
    m = posemb("learned_1d", (4, 4))
    grid = m.pos_embed[0, 1:].view(4, 4, DIM).detach()
    expected = resize_grid(resize_grid(grid, (6, 4)), (6, 1))  # one axis per call: correct
    torch.testing.assert_close(added(m, (6, 1))[1:].view(6, 1, DIM), expected)


def sincos(pos: float, dim: int, temperature: float = 10000.0) -> list[float]:
    """Vaswani et al. 2017's sinusoid of one position, sin in the first half, cos in the second."""
    freqs = [temperature ** (-k / (dim // 2)) for k in range(dim // 2)]
    return [math.sin(pos * f) for f in freqs] + [math.cos(pos * f) for f in freqs]


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("new", [(4, 4), (6, 6), (3, 5)])
def test_sinusoidal_is_the_formula_at_any_grid(dims, new):
    m = posemb({"sinusoidal": {"dims": dims}}, (4, 4))
    gh, gw = new
    if dims == 1:  # the raster index of the patch
        rows = [sincos(i * gw + j, DIM) for i in range(gh) for j in range(gw)]
    else:  # half the channels the row, half the column
        rows = [sincos(i, DIM // 2) + sincos(j, DIM // 2) for i in range(gh) for j in range(gw)]
    out = added(m, new)
    assert out[0].eq(0).all()
    torch.testing.assert_close(out[1:], torch.tensor(rows), rtol=0, atol=1e-6)


def test_no_posemb_adds_nothing_at_any_grid():
    m = posemb("none", (4, 4))
    for new in ((4, 4), (6, 3)):
        x = torch.randn(1, 1 + new[0] * new[1], DIM)
        assert torch.equal(m(x, new), x)
