"""Why a connection costs more in a wider layer: one sparse layer's kernels at growing widths, per connection.

Run from the repository root::

    python benchmarks/widths.py                      # the layer widths of benchmarks/scale.py's 10^5 … 10^7 sizes
    python benchmarks/widths.py --widths 1000,25000,250000 --repeats 9

For each width W, one ``SparseLinear(W, W)`` at Erdős–Rényi ``--epsilon`` (default 2, as in
``benchmarks/scale.py``: four connections per neuron) and a batch of ``--batch`` samples (default 64) in the
feature-major layout of the fused step: the three kernels of a training step on it, at one thread —
the forward with its All-ReLU and dropout epilogue (``fused.forward``), the value gradient
(``fused.sddmm``) and the input gradient over the CSR (``fused.scatter``) — timed in rounds that visit
every width in turn (the host's drift hits them alike); medians over ``--repeats`` rounds.

Each connection gathers (or scatters) one activation row of ``batch`` values at a random position of a buffer
of ``W · batch · 4`` bytes, so its cost depends on where that buffer lives: in the cache for a narrow layer,
in memory for a wide one. The table gives ns per connection and sample and the ratio to the narrowest width.
"""

from __future__ import annotations

import argparse
import statistics
import time

import _common  # noqa: F401  (before torch: sets OMP_WAIT_POLICY)
from _common import load_average, markdown_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", default="25000,250000,2500000",
                   help="comma list of layer widths (default 25000,250000,2500000: the hidden layers of "
                        "benchmarks/scale.py at 10^5, 10^6 and 10^7 neurons)")
    p.add_argument("--epsilon", type=float, default=2.0, help="Erdős–Rényi epsilon (default 2)")
    p.add_argument("--batch", type=int, default=64, help="samples (default 64)")
    p.add_argument("--repeats", type=int, default=7, help="rounds over all widths (default 7)")
    a = p.parse_args()
    try:
        widths = [int(float(w)) for w in a.widths.split(",")]
    except ValueError:
        p.error(f"--widths must be a comma list of numbers, got {a.widths!r}")
    if any(w < 2 for w in widths) or a.epsilon <= 0 or a.batch < 1 or a.repeats < 1:
        p.error("--widths must be ≥ 2, --epsilon > 0, --batch and --repeats ≥ 1")

    import numpy as np
    import torch

    import sparta
    from sparta.kernels import fused

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ld, b = fused.leading_dim(a.batch), a.batch
    f32 = np.float32
    no_d = np.empty(0, f32)  # All-ReLU writes a one-byte code per value for the backward, not a derivative
    thr = np.uint32(0.3 * 2**32)  # dropout 0.3, as in the scale benchmark
    cases = []
    for w in widths:
        layer = sparta.SparseLinear(w, w, epsilon=a.epsilon)
        ip = layer.indptr.numpy().view(np.uint64)
        ix = layer.indices.numpy().view(np.uint32)
        v = layer.values.detach().numpy()
        bias = layer.bias.detach().numpy()
        x, out, dz, dx = (fused.aligned_empty(w * ld, f32) for _ in range(4))
        x[:] = rng.standard_normal(x.size, f32)
        dz[:] = rng.standard_normal(dz.size, f32)
        code = fused.aligned_empty(w * ld, np.uint8)
        g = np.empty(v.size, f32)
        kernels = {
            "forward": lambda ip=ip, ix=ix, v=v, bias=bias, x=x, out=out, code=code, w=w: fused.forward(
                ip, ix, v, bias, x, ld, 0, b, out, no_d, code, fused.MODE_TRAIN, fused.ACT_LEAKY, f32(0.6), thr,
                f32(1 / 0.7), np.uint32(1), np.uint32(2), 0, w, 0),
            "value gradient": lambda ip=ip, ix=ix, dz=dz, x=x, g=g, w=w: fused.sddmm(
                ip, ix, dz, x, ld, 0, b, g, np.uint64(0), False, 0, w),
            "input gradient": lambda ip=ip, ix=ix, v=v, dz=dz, dx=dx: fused.scatter(
                ip, ix, v, dz, ld, 0, b, dx, 0, 1 << 62),
        }
        for k in kernels.values():  # compile, touch every page
            k()
        cases.append((w, v.size, kernels))
    times: dict[tuple[int, str], list[float]] = {}
    for _ in range(a.repeats):
        for w, nnz, kernels in cases:
            for name, k in kernels.items():
                t0 = time.perf_counter()
                k()
                times.setdefault((w, name), []).append((time.perf_counter() - t0) / (nnz * b) * 1e9)
    names = list(cases[0][2])
    med = {key: statistics.median(v) for key, v in times.items()}
    rows = []
    for w, nnz, _ in cases:
        total = sum(med[(w, n)] for n in names)
        first = sum(med[(widths[0], n)] for n in names)
        rows.append([f"{w:,}", f"{nnz:,}", f"{w * ld * 4 / 2**20:.1f}", *(f"{med[(w, n)]:.3f}" for n in names),
                     f"{total:.3f}", f"{total / first:.2f}"])
    print(f"SparseLinear(W, W), ε = {a.epsilon:g}, batch {b}, float32, 1 thread, ns per connection and sample, "
          f"medians of {a.repeats} rounds; load average {load_average()}\n")
    print(markdown_table(["width W", "connections", "activations MB", *names, "all three", "× narrowest"], rows))


if __name__ == "__main__":
    main()
