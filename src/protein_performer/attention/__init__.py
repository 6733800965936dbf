"""FAVOR attention: random-feature softmax (and generalized) attention, linear in sequence length.

Three tiers, each using only the ones below it (and knowing nothing about proteins):

- ``ops/``: functions of tensors. ``linear.py`` (normalized linear attention, causal gated chunked
  products and the running key stabilizer), ``fused.py`` (FAVOR+ as one autograd function), ``fla.py``
  (causal sums through flash-linear-attention's Triton kernels, optional), ``favor.py``
  (:func:`favor_attention`, :func:`softmax_attention`, :data:`FEATURE_PRECISIONS`, :data:`BACKENDS`) and ``naive.py`` (the L×L references, and the windows and column sums of
  attention matrices that the analyses read).
- ``feature_maps.py``: one :class:`FeatureMap` per kernel, owning its math; :data:`FEATURE_MAPS`
  is the registry :data:`KERNELS` lists. ``projection.py``: :func:`draw_projection`.
- ``layers.py``: :class:`FavorAttention` and its exact twin :class:`SoftmaxAttention`, and the rivals
  :class:`LocalAttention` (sliding window) and :class:`LinearAttention` (elu + 1 features);
  ``baselines.py``: Reformer and Linformer from their own packages (optional extra ``baselines``).
  :data:`ATTENTIONS` is the registry of attention kinds a model is built from.
"""

from .baselines import BASELINES, LinformerAttention, ReformerAttention
from .feature_maps import FEATURE_MAPS, KERNELS, FeatureMap, KeyFeatures, feature_map, random_features
from .layers import LAYERS, FavorAttention, LinearAttention, LocalAttention, SelfAttention, SoftmaxAttention
from .ops.favor import BACKENDS, FEATURE_PRECISIONS, favor_attention, softmax_attention
from .projection import draw_projection

# Every attention kind a model can be built with, by the name its config gives (the packages behind the
# baselines are imported only when such a layer is built).
ATTENTIONS: dict[str, type] = {**LAYERS, **BASELINES}

__all__ = [
    "ATTENTIONS",
    "BACKENDS",
    "FEATURE_MAPS",
    "FEATURE_PRECISIONS",
    "KERNELS",
    "FavorAttention",
    "FeatureMap",
    "KeyFeatures",
    "LinearAttention",
    "LinformerAttention",
    "LocalAttention",
    "ReformerAttention",
    "SelfAttention",
    "SoftmaxAttention",
    "draw_projection",
    "favor_attention",
    "feature_map",
    "random_features",
    "softmax_attention",
]
