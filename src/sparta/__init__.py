"""sparta: truly sparse neural-network training.

Importing sparta sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already sets it: with few
cores on a shared machine, OpenMP threads that spin while waiting can slow a step many times over.
It takes effect for OpenMP runtimes loaded after this import (import sparta before torch to cover
torch's own). The names below are imported on first use, so ``import sparta`` itself does not load torch.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from sparta._lazy import lazy_attributes  # noqa: E402

__version__ = "0.1.0"
_EXPORTS = {"AllReLU": "sparta.nn", "MaskedConv2d": "sparta.nn", "MaskedLinear": "sparta.nn",
            "SparseLinear": "sparta.nn", "GMP": "sparta.topology", "SET": "sparta.topology",
            "ImportancePruning": "sparta.topology", "RigL": "sparta.topology", "Static": "sparta.topology",
            "TopologyAlgorithm": "sparta.topology", "sparsify": "sparta.topology",
            "SparseMLP": "sparta.nn", "get_num_threads": "sparta.kernels.threads",
            "set_num_threads": "sparta.kernels.threads", "nn": "sparta.nn", "optim": "sparta.optim",
            "topology": "sparta.topology"}
__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
__all__ = ["GMP", "SET", "AllReLU", "ImportancePruning", "MaskedConv2d", "MaskedLinear", "RigL", "SparseLinear",
           "SparseMLP", "Static", "TopologyAlgorithm", "__version__", "get_num_threads", "nn", "optim",
           "set_num_threads", "sparsify", "topology"]
