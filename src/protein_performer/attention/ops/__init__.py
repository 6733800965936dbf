"""Attention as functions of tensors, the lowest tier: nothing here holds parameters or draws randomness.

- ``linear.py``: normalized linear attention ``D⁻¹ Q′(K′ᵀV)`` from given features, bidirectional or
  causal (chunked prefix sums), with its backward written out.
- ``fused.py``: FAVOR+ (positive softmax features) and its attention as one autograd function.
- ``favor.py``: :func:`favor_attention` and :func:`softmax_attention`, the calls layers make.
- ``local.py``: sliding-window softmax attention in blocks (the local rival), linear in L.
- ``naive.py``: the L×L references the fast paths are tested against, and the windows and column sums
  the analyses read.

``linear.py`` and ``fused.py`` stand alone; ``favor.py`` and ``naive.py`` ask the kernel's feature map
(``..feature_maps``) for its features, so import them by module path (this package imports nothing, so
that the feature maps can build on ``linear.py`` and ``fused.py``).
"""
