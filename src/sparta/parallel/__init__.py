"""WASAP-SGD (Curci, Mocanu & Pechenizkiy, "Truly Sparse Neural Networks at Scale", 2021) on ``torch.distributed``.

Rank 0 is a parameter server holding the sparse model; ranks 1..N are workers holding equal shards of the
training data. Phase 1 (the first ``phase1_fraction`` of the epochs): workers send minibatch gradients at their
connections, the server applies momentum SGD (asynchronously, in arrival order, or synchronously, averaging the
N gradients) and returns the model; after every global epoch it runs SET and Importance Pruning. Phase 2: workers
train locally with their own SET; the server averages their models over the union of their topologies and
prunes every layer back to its connection budget by magnitude. Everything exchanged is sparse.

``train_run(run_config, out)`` (what ``sparta train --workers N`` calls) and ``train_wasap(config, workers,
run_dir)`` run N + 1 local processes and write a sparta run directory; ``python -m sparta.parallel`` runs one
process of a ``torchrun`` job on one or several machines. The names below are imported on first use, so the
command can set up the process (``TORCH_CPP_LOG_LEVEL``) before torch loads.
"""

from sparta._lazy import lazy_attributes

_EXPORTS = {"PeerLost": "sparta.parallel.comm", "WasapConfig": "sparta.parallel.config",
            "WasapConfigError": "sparta.parallel.config", "build_model": "sparta.parallel.config",
            "from_run_config": "sparta.parallel.config", "load_data": "sparta.parallel.config",
            "to_run_config": "sparta.parallel.config", "WasapResult": "sparta.parallel.launch",
            "WorkerFailure": "sparta.parallel.launch", "load_model": "sparta.parallel.launch",
            "open_run": "sparta.parallel.launch", "run_process": "sparta.parallel.launch",
            "train_run": "sparta.parallel.launch", "train_wasap": "sparta.parallel.launch",
            "merge_layers": "sparta.parallel.merge", "merge_models": "sparta.parallel.merge",
            "LayerData": "sparta.parallel.state", "SparsityError": "sparta.parallel.state",
            "check_layers": "sparta.parallel.state", "read_metrics": "sparta.rundir.files"}
__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
