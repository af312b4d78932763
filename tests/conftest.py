import os

# What `import sparta` does, but before torch loads its OpenMP runtime (this file is the first to import torch):
# OpenMP workers that spin while waiting slow a 2-core machine down many times over.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# The autouse fixture below is function-scoped; it only seeds and restores global state, so it is safe to share
# between the examples of a hypothesis test.
settings.register_profile("sparta", deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.load_profile("sparta")


@pytest.fixture(autouse=True)
def _restore_global_state():
    """Seed torch, and restore torch's, numba's and sparta's thread counts and the default dtype after every test."""
    torch_threads = torch.get_num_threads()
    numba_threads = numba.get_num_threads()
    default_dtype = torch.get_default_dtype()
    torch.manual_seed(1234)
    yield
    from sparta.kernels.threads import set_num_threads

    set_num_threads(None)  # sparta's own thread count follows torch's again
    torch.set_num_threads(torch_threads)
    numba.set_num_threads(numba_threads)
    torch.set_default_dtype(default_dtype)
