import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Topology tests use tiny layers: run torch (and the numba kernels, which follow torch's thread count) on one
    thread. tests/conftest.py imports torch before sparta, so OMP_WAIT_POLICY=PASSIVE does not reach torch's OpenMP
    runtime, and on 2 cores every small parallel op then costs milliseconds. The root conftest restores the count."""
    torch.set_num_threads(1)
    yield
