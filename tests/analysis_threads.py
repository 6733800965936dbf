"""One intra-op thread for the analysis tests (imported by each ``test_analysis_*`` module).

Their tensors are small: on a busy two-core machine, two OpenMP threads per operation cost far more in
waiting for each other than they gain (measured: 15 s instead of 1 s for the approximation CLI test).
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
