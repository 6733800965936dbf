"""Feature maps: the registry, and stabilized features equal to the paper's up to the constants that
cancel in the attention ratio (one per query row; one per (batch, head) for keys)."""

import pytest
import torch
from conftest import qkv

from protein_performer.attention import FEATURE_MAPS, KERNELS, FeatureMap, feature_map, random_features


def test_registry_names_every_kernel_once():
    assert KERNELS == tuple(FEATURE_MAPS) == ("softmax", "softmax_trig", "softmax_hyperbolic", "relu")
    for name, cls in FEATURE_MAPS.items():
        assert issubclass(cls, FeatureMap) and cls.name == name and isinstance(feature_map(name), cls)
    with pytest.raises(ValueError, match="unknown kernel 'cos'; choose one of softmax, softmax_trig"):
        feature_map("cos")


@pytest.mark.parametrize("kernel", KERNELS)
def test_stabilized_features_are_the_papers_up_to_cancelling_constants(kernel):
    q, k, _ = qkv(b=2, h=3, length=20, d=8, norm=2.0)
    w = torch.randn(3, 12, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pad = torch.zeros(2, 20, dtype=torch.bool)
    pad[1, 15:] = True
    fm = feature_map(kernel)
    assert torch.equal(fm.random_features(q, w), random_features(q, w, kernel))
    width = 24 if kernel in ("softmax_trig", "softmax_hyperbolic") else 12  # M′ = 2M
    rq = fm.query_features(q, w) / fm.random_features(q, w)  # [B, H, L, M']: constant along M'
    assert rq.shape[-1] == width
    torch.testing.assert_close(rq, rq[..., :1].expand_as(rq))
    kf, log_scale = fm.key_features(k, w, pad)
    assert log_scale is None
    assert kf[1, :, 15:].abs().max() == 0  # padded keys exactly zero
    rk = kf[1:, :, :15] / fm.random_features(k, w)[1:, :, :15]  # constant over real keys and features
    torch.testing.assert_close(rk, rk[..., :1, :1].expand_as(rk))
    rk = kf[:1] / fm.random_features(k, w)[:1]
    torch.testing.assert_close(rk, rk[..., :1, :1].expand_as(rk))
