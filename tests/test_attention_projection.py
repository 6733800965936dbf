import math

import pytest
import torch

from protein_performer.attention import draw_projection


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("m,d", [(16, 16), (40, 16), (256, 64), (5, 8)])
def test_orthogonal_blocks_are_orthogonal(m, d):
    w = draw_projection(m, d, generator=gen(), dtype=torch.float64)
    assert w.shape == (m, d)
    for start in range(0, m, d):
        block = w[start : start + d]
        directions = block / block.norm(dim=-1, keepdim=True)
        gram = directions @ directions.T
        torch.testing.assert_close(gram, torch.eye(len(block), dtype=torch.float64), atol=1e-12, rtol=0)


def test_blocks_are_independent():
    w = draw_projection(32, 16, generator=gen(), dtype=torch.float64)
    cross = (w[:16] / w[:16].norm(dim=-1, keepdim=True)) @ (w[16:] / w[16:].norm(dim=-1, keepdim=True)).T
    assert cross.abs().max() > 0.1  # two blocks are not one orthogonal system


def test_sqrt_d_norms_exact():
    w = draw_projection(100, 16, norm="sqrt_d", generator=gen(), dtype=torch.float64)
    torch.testing.assert_close(w.norm(dim=-1), torch.full((100,), 4.0, dtype=torch.float64))
    w = draw_projection(100, 16, orthogonal=False, norm="sqrt_d", generator=gen(), dtype=torch.float64)
    torch.testing.assert_close(w.norm(dim=-1), torch.full((100,), 4.0, dtype=torch.float64))


@pytest.mark.parametrize("orthogonal", [True, False])
def test_chi_rows_are_marginally_gaussian(orthogonal):
    # Rows must be N(0, I_d): mean 0, second moment I, squared norm with mean d and variance 2d.
    d, draws = 6, 4000
    rows = torch.cat([draw_projection(d, d, orthogonal=orthogonal, generator=gen(s), dtype=torch.float64) for s in range(draws)])
    n = len(rows)
    assert rows.mean(0).abs().max() < 4 / math.sqrt(n)
    second = rows.T @ rows / n
    assert (second - torch.eye(d, dtype=torch.float64)).abs().max() < 6 * math.sqrt(2 / n)
    sq = rows.pow(2).sum(-1)
    assert abs(sq.mean().item() - d) < 4 * math.sqrt(2 * d / n)
    assert abs(sq.var().item() - 2 * d) / (2 * d) < 0.1


def test_orthogonal_blocks_are_haar():
    # LAPACK's Householder QR without the sign fix gives Q[0, 0] < 0 always; Haar Q has every entry
    # symmetric around 0 and E[Q_ij²] = 1/d.
    d, draws = 5, 4000
    qs = torch.stack([draw_projection(d, d, norm="sqrt_d", generator=gen(s), dtype=torch.float64) / math.sqrt(d)
                      for s in range(draws)])
    mean = qs.mean(0)
    assert mean.abs().max() < 4 * math.sqrt(1 / d / draws)
    assert (qs[:, 0, 0] > 0).double().mean().item() == pytest.approx(0.5, abs=0.04)
    torch.testing.assert_close(qs.pow(2).mean(0), torch.full((d, d), 1 / d, dtype=torch.float64), atol=0.02, rtol=0)


def test_generator_fixes_the_draw():
    a = draw_projection(64, 16, generator=gen(3))
    b = draw_projection(64, 16, generator=gen(3))
    c = draw_projection(64, 16, generator=gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.float32


def test_bad_arguments():
    with pytest.raises(ValueError, match="norm"):
        draw_projection(4, 4, norm="unit")
    with pytest.raises(ValueError, match="positive"):
        draw_projection(0, 4)
