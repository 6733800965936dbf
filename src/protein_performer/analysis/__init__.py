"""The paper's analyses of trained models, as numbers and figures.

- ``approximation.py``: MSE of FAVOR's attention matrix against exact softmax (by M, kernel,
  orthogonal vs iid; by true attention value; on random or a checkpoint's real q/k).
- ``attention_maps.py``: windows of every layer's and head's attention matrix without forming L×L.
- ``similarity.py``: amino-acid similarity from attention (Vig et al. 2020) against BLOSUM62.
- ``figures.py``: their matplotlib figures; ``report.py``: a self-contained HTML page for a run.
"""
