"""Attention benchmark: our FAVOR attention against exact attention and other linear-attention code.

Measured for every sequence length L, dtype and direction (bidirectional / causal), side by side:

- ``ours``: :func:`protein_performer.attention.favor_attention` (softmax kernel, ``[M, d]`` projection
  from :func:`~protein_performer.attention.draw_projection`);
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` (exact; flash kernel on CPU);
- ``performer``: performer-pytorch's ``FastAttention`` (optional; ``pip install performer-pytorch``);
- ``fast-tr``: a causal FAVOR+ built on pytorch-fast-transformers' ``causal_dot_product`` kernel
  (optional, causal only): the same stabilized positive features as ours computed in eager PyTorch,
  the normalizer as a ones column appended to V, the causal product in the library's C++/CUDA kernel.

Per configuration: forward time (under ``torch.no_grad``, i.e. inference) and forward+backward time
(inputs require grad, backward from a fixed random output gradient), each the median over repeats
after a warmup; peak memory above the baseline with inputs allocated (from a separate run, see below);
minor page faults and user/system CPU time per run. A configuration whose run takes longer than
``--slow-run-s`` is warmed up at a small length and timed once (that run also gives the peak).

Every configuration runs in a fresh process (forked from a ``multiprocessing`` forkserver that has
only imported the libraries, so no allocator or thread-pool state is shared between configurations).
On CPU the peak is the resident-set high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``
after ``malloc_trim``) minus the resident set just before the run; on CUDA it is
``torch.cuda.max_memory_allocated`` minus the memory allocated before the run. The trim returns freed
heap pages to the kernel, so that run re-faults them: timing runs are therefore separate runs without
the trim (steady state, as in a training loop); the memory run's own time is kept as ``memory_run``.

A method whose predicted peak (extrapolated log-log from the lengths already measured, plus inputs and
gradients) would exceed ``--memory-limit-gb``, or whose predicted single forward+backward run would
exceed ``--time-limit-s``, is skipped at that length and every larger one, with a ``skipped: ...``
note in the JSON; so is one that failed (out of memory, timeout).

FLOP convention (``ours`` and ``sdpa``; multiply-add = 2 FLOPs, only the matrix products counted,
elementwise work such as exp not counted), per batch element and head:

- ours forward: feature projections ``2·L·M·d`` for q and for k; bidirectional ``K′ᵀ[V 1]`` and
  ``Q′(K′ᵀ[V 1])`` ``2·L·M·(d+1)`` each; causal (chunk C): intra-chunk ``Q′K′ᵀ`` ``2·L·C·M`` and
  scores·[V 1] ``2·L·C·(d+1)`` (the full C×C block, as executed), inter-chunk states and the product
  with the carried state ``2·L·M·(d+1)`` each.
- ours backward: the input gradients of the two projections (the projection needs no gradient:
  ``2·L·M·d`` each) plus twice the attention products (the usual two products per forward product).
  This is implementation-independent, so versions compare on the same count. It equals what both
  directions execute: the chunked causal backward runs three chunked causal products (grad q, grad k,
  grad v), but they share their states and scores with each other and with the forward pass, so that
  together they execute exactly twice the forward's products (before that sharing, one product more:
  the profiler counted 95.0 GFLOP for fwd+bwd at L=16384 against 75.7 by this convention).
- sdpa: forward ``4·L²·d`` (causal half of it), backward 2.5× forward (flash backward).

Run ``python benchmarks/attention.py --help``. Modules, in the order a run uses them: ``options`` (command
line), ``methods`` (the implementations compared), ``single`` (one configuration, in a fresh process, with
``procfs`` and ``device`` helpers), ``runner`` (the fresh processes), ``scaling`` (log-log extrapolation and
crossover), ``flops`` (FLOP counts, reference matmul), ``orchestrate`` (the sweep over configurations),
``results``, ``report``, ``plot``, ``provenance`` (code and machine identity), ``profiling`` (``--profile``).
"""
