
import pytest
import torch
from analysis_threads import one_thread  # noqa: F401  (autouse: one intra-op thread)

from protein_performer.analysis.approximation import (
    checkpoint_pairs,
    error_by_value,
    error_tables,
    random_inputs,
)
from protein_performer.attention import draw_projection
from protein_performer.attention.ops.naive import favor_attention_matrix, softmax_attention_matrix
from protein_performer.model import PerformerLM, preset

PAIRS = random_inputs(6, 128, 16, seed=0)


def test_inputs_are_normalized_and_matrices_match_the_naive_references():
    q, k = PAIRS[0]
    assert q.dtype == torch.float64 and q.shape == (128, 16)
    assert (q * 16**-0.25).pow(2).sum(-1).mean() == pytest.approx(1.0, abs=0.1)  # E‖q̃‖² = 1
    w = draw_projection(32, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # the analysis calls the naive references on one pair [L, d]: the same matrices as for [B, H, L, d]
    torch.testing.assert_close(softmax_attention_matrix(q, k), softmax_attention_matrix(q[None, None], k[None, None])[0, 0])
    for kernel in ("softmax", "softmax_trig", "softmax_hyperbolic"):
        torch.testing.assert_close(favor_attention_matrix(q, k, w, kernel=kernel),
                                   favor_attention_matrix(q[None, None], k[None, None], w, kernel=kernel)[0, 0])


def test_errors_fall_with_m_and_orthogonal_beats_iid_at_small_m():
    tables = error_tables(PAIRS, kernels=("softmax", "softmax_hyperbolic"), feature_counts=(16, 64, 256), seed=0)
    for kernel in ("softmax", "softmax_hyperbolic"):
        for projection in ("orthogonal", "iid"):
            mean = [tables["mse"][kernel][projection][m]["mean"] for m in ("16", "64", "256")]
            assert mean[0] > 2 * mean[1] > 4 * mean[2], (kernel, projection, mean)
            relative = [tables["relative"][kernel][projection][m]["mean"] for m in ("16", "64", "256")]
            assert relative[0] > 1.4 * relative[1] > 2 * relative[2], (kernel, projection, relative)  # ~ 1/√M
        for error in ("mse", "relative"):
            assert tables[error][kernel]["orthogonal"]["16"]["mean"] < tables[error][kernel]["iid"]["16"]["mean"]
    assert tables["relative"]["softmax"]["iid"]["64"]["samples"] == len(PAIRS)


def test_relative_error_is_the_row_norm_ratio_and_compares_across_lengths():
    q, k = PAIRS[0]
    one = error_tables([(q, k)], kernels=("softmax",), feature_counts=(32,), seed=5)
    w = draw_projection(32, 16, orthogonal=True, generator=torch.Generator().manual_seed(5 * 1_000_003 + 32 * 2 + 1),
                        dtype=torch.float64)
    exact, approx = softmax_attention_matrix(q, k), favor_attention_matrix(q, k, w, kernel="softmax")
    expected = ((approx - exact).norm(dim=-1) / exact.norm(dim=-1)).mean()
    assert one["relative"]["softmax"]["orthogonal"]["32"]["mean"] == pytest.approx(float(expected), rel=1e-12)
    assert one["mse"]["softmax"]["orthogonal"]["32"]["mean"] == pytest.approx(float((approx - exact).pow(2).mean()), rel=1e-12)
    # The same inputs at 4× the length: the MSE shrinks by ~L² (rows sum to one), the relative error does not.
    short, long = (error_tables(random_inputs(4, n, 16, seed=1), kernels=("softmax",), feature_counts=(64,), seed=0)
                   for n in (64, 256))
    mse_ratio = short["mse"]["softmax"]["orthogonal"]["64"]["mean"] / long["mse"]["softmax"]["orthogonal"]["64"]["mean"]
    rel_ratio = short["relative"]["softmax"]["orthogonal"]["64"]["mean"] / long["relative"]["softmax"]["orthogonal"]["64"]["mean"]
    assert mse_ratio > 8 and 0.6 < rel_ratio < 1.6, (mse_ratio, rel_ratio)


def test_positive_features_beat_trig_where_true_attention_is_small():
    wide = [(2 * q, 2 * k) for q, k in PAIRS[:3]]  # larger inputs: attention values over several decades
    result = error_by_value(wide, kernels=("softmax", "softmax_trig"), num_features=64, bins=6, seed=0)
    assert sum(result["count"]) == 3 * 128 * 128 and len(result["edges"]) == 7
    positive, trig = result["softmax"]["relative_rmse"], result["softmax_trig"]["relative_rmse"]
    assert positive[0] < trig[0] / 3  # the smallest true values: trig's relative error explodes
    assert trig[0] > trig[-1]  # and is worst there


def test_checkpoint_pairs_are_the_layers_queries_and_keys():
    torch.manual_seed(0)
    model = PerformerLM(preset("tiny", d_model=32, num_heads=2, d_ff=64, num_features=16, dropout=0.0)).eval()
    tokens = [torch.randint(4, 24, (40,)), torch.randint(4, 24, (30,))]
    pairs = checkpoint_pairs(model, tokens)
    assert len(pairs) == 2 * 2 * 2 and pairs[0][0].shape == (40, 16) and pairs[-1][1].shape == (30, 16)
    maps = model.attention_maps(tokens[0][None])[0]  # [layers, H, L, L], exact under the model's own features
    w = model.blocks[1].attn.projection[1].double()
    torch.testing.assert_close(favor_attention_matrix(*pairs[3], w, kernel="softmax").float(), maps[1, 1], rtol=1e-4, atol=1e-6)
