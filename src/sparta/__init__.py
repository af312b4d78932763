"""sparta: truly sparse neural-network training.

Importing sparta sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already sets it: with few
cores on a shared machine, OpenMP threads that spin while waiting can slow a step many times over.
It takes effect for OpenMP runtimes loaded after this import (import sparta before torch to cover
torch's own).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from sparta import nn, optim, topology  # noqa: E402
from sparta.kernels.threads import get_num_threads, set_num_threads  # noqa: E402
from sparta.nn import AllReLU, MaskedConv2d, MaskedLinear, SparseLinear, SparseMLP  # noqa: E402
from sparta.topology import GMP, SET, ImportancePruning, RigL, Static, TopologyAlgorithm, sparsify  # noqa: E402

__version__ = "0.1.0"
__all__ = ["GMP", "SET", "AllReLU", "ImportancePruning", "MaskedConv2d", "MaskedLinear", "RigL", "SparseLinear",
           "SparseMLP", "Static", "TopologyAlgorithm", "__version__", "get_num_threads", "nn", "optim",
           "set_num_threads", "sparsify", "topology"]
