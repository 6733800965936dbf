"""The one-call GPU benchmark (``benchmarks/gpu.py``): attention time, memory and error, and training
throughput, every item guarded and saved as it is measured.

Modules, in the order a run uses them: ``options`` (command line, GPU and ``--smoke`` sizes), ``run``
(the parts under one budget), ``record`` (the results document, the guarded item, timing and peak
memory), ``attention`` (attention timing and errors: eager, fla and compiled), ``training`` (tokens/s),
``report`` (``table.md`` and ``gpu.png``). Shared with the attention benchmark: ``attention_bench``'s
``device.synchronize``, ``results.save`` (atomic write) and ``provenance`` (machine and code identity).
"""
