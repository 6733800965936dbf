"""FAVOR attention: random-feature softmax (and generalized) attention, linear in sequence length.

Public API: :func:`draw_projection`, :func:`favor_attention`, :func:`softmax_attention`,
:class:`FavorAttention` (and its exact twin :class:`SoftmaxAttention`). Naive L×L references live in
:mod:`protein_performer.attention.naive`.
"""

from .favor import favor_attention, softmax_attention
from .features import KERNELS, random_features
from .modules import FavorAttention, SoftmaxAttention
from .projection import draw_projection

__all__ = [
    "KERNELS",
    "FavorAttention",
    "SoftmaxAttention",
    "draw_projection",
    "favor_attention",
    "random_features",
    "softmax_attention",
]
