"""Layer by layer with the update in the backward, or the batch split: which ``train_step`` is faster for a network.

Run from the repository root::

    python benchmarks/step_modes.py --hidden 250000 250000 250000 250000 --epsilon 2
    python benchmarks/step_modes.py --inputs 784 --hidden 10000 10000 10000 --epsilon 20 --batch 128 --transpose csc

One ``SparseMLP`` (All-ReLU, dropout 0.3, ``sparta.optim.SGD`` momentum 0.9, weight decay 2e-4) stepped three
ways, alternating in blocks of ``--steps`` steps inside one process (so the host's drift hits all alike): *layer*
forces the layer-by-layer step with the optimizer inside the backward (``train_step(..., keep_grad=False)``,
``FUSED_UPDATE_CONNECTIONS = 0``); *split* the batch split with the update inside the same run
(``keep_grad=False``, ``FUSED_UPDATE_CONNECTIONS`` and ``LAYER_MODE_CONNECTIONS`` out of reach); *split, stored*
the batch split that hands its gradients to ``optimizer.step()`` (``keep_grad=True``). Prints the median ms per
sample of each and its ratio to the last; ``sparta train`` takes the layer-by-layer step from
``FUSED_UPDATE_CONNECTIONS`` connections and the split with the update in the run below.
"""

from __future__ import annotations

import argparse
import statistics
import time

import _common  # noqa: F401  (before torch: sets OMP_WAIT_POLICY)
from _common import load_average, markdown_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", type=int, default=1000, help="input features (default 1000)")
    p.add_argument("--hidden", type=int, nargs="+", default=[25_000] * 4, help="hidden widths (default 4 × 25000)")
    p.add_argument("--epsilon", type=float, default=2.0, help="Erdős–Rényi epsilon (default 2)")
    p.add_argument("--transpose", choices=["scatter", "csc"], default="scatter")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=5, help="steps per block (default 5)")
    p.add_argument("--repeats", type=int, default=6, help="blocks per way (default 6)")
    a = p.parse_args()
    if (a.inputs < 1 or any(h < 1 for h in a.hidden) or a.epsilon <= 0 or a.batch < 1 or a.steps < 1
            or a.repeats < 1 or a.threads < 1):
        p.error("--inputs, --hidden, --batch, --threads, --steps and --repeats must be ≥ 1 and --epsilon > 0")

    import torch

    import sparta
    from sparta.kernels.threads import configure
    from sparta.nn import mlp

    configure(a.threads, sparse=True)
    torch.manual_seed(0)
    sizes = [a.inputs, *a.hidden, 10]
    model = sparta.SparseMLP(sizes, epsilon=a.epsilon, dropout=0.3, transpose=a.transpose)
    opt = sparta.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-4)
    x, y = torch.randn(a.batch, a.inputs), torch.randint(0, 10, (a.batch,))
    never = 1 << 62
    ways = {  # (FUSED_UPDATE_CONNECTIONS, LAYER_MODE_CONNECTIONS, keep_grad)
        "layer by layer, update in the backward": (0, never, False),
        "batch split, update in the run": (never, never, False),
        "batch split, stored gradients + step()": (never, never, True),
    }
    times: dict[str, list[float]] = {w: [] for w in ways}
    for _ in range(a.repeats):
        for way, (fused_from, layer_from, keep) in ways.items():
            mlp.FUSED_UPDATE_CONNECTIONS, mlp.LAYER_MODE_CONNECTIONS = fused_from, layer_from
            model.release_arrays()
            model.train_step(x, y, opt, keep_grad=keep)  # buffers of this way
            t0 = time.perf_counter()
            for _ in range(a.steps):
                model.train_step(x, y, opt, keep_grad=keep)
            times[way].append((time.perf_counter() - t0) / a.steps / a.batch * 1e3)
    med = {w: statistics.median(t) for w, t in times.items()}
    stored = med["batch split, stored gradients + step()"]
    nnz = sum(m.nnz for m in model.layers)
    print(f"SparseMLP {'-'.join(map(str, sizes))}, ε = {a.epsilon:g}, {nnz:,} connections, transpose={a.transpose!r}, "
          f"batch {a.batch}, {a.threads} threads; medians of {a.repeats} alternating blocks of {a.steps} steps; "
          f"load average {load_average()}\n")
    print(markdown_table(["way", "ms/sample", "× split, stored"],
                         [[w, f"{m:.3f}", f"{stored / m:.2f}"] for w, m in med.items()]))


if __name__ == "__main__":
    main()
