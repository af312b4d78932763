"""WASAP-SGD (Curci, Mocanu & Pechenizkiy, "Truly Sparse Neural Networks at Scale", 2021) on ``torch.distributed``.

Rank 0 is a parameter server holding the sparse model; ranks 1..N are workers holding equal shards of the
training data. Phase 1 (the first ``phase1_fraction`` of the epochs): workers send minibatch gradients at their
connections, the server applies momentum SGD (asynchronously, in arrival order, or synchronously, averaging the
N gradients) and returns the model; after every global epoch it runs SET and Importance Pruning. Phase 2: workers
train locally with their own SET; the server averages their models over the union of their topologies and
prunes every layer back to its connection budget by magnitude. Everything exchanged is sparse.

``train_run(run_config, out)`` (what ``sparta train --workers N`` calls) and ``train_wasap(config, workers,
run_dir)`` run N + 1 local processes and write a sparta run directory; ``python -m sparta.parallel`` runs one
process of a ``torchrun`` job on one or several machines.
"""

from sparta.parallel.comm import PeerLost
from sparta.parallel.config import (
    WasapConfig,
    WasapConfigError,
    build_model,
    from_run_config,
    load_data,
    to_run_config,
)
from sparta.parallel.launch import (
    WasapResult,
    WorkerFailure,
    load_model,
    open_run,
    run_process,
    train_run,
    train_wasap,
)
from sparta.parallel.merge import merge_layers, merge_models
from sparta.parallel.state import LayerData, SparsityError, check_layers
from sparta.rundir.files import read_metrics

__all__ = ["LayerData", "PeerLost", "SparsityError", "WasapConfig", "WasapConfigError", "WasapResult", "WorkerFailure",
           "build_model", "check_layers", "from_run_config", "load_data", "load_model", "merge_layers", "merge_models",
           "open_run", "read_metrics", "run_process", "to_run_config", "train_run", "train_wasap"]
