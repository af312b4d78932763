"""N:M sparse training on the CPU: kernels, a whole SET-MLP epoch, memory, mask quality and accuracy.

Run from the repository root::

    python benchmarks/nm.py kernels            # fwd+bwd of one layer: N:M (plain, transposable, vector-wise)
                                               # vs CSR at equal density vs dense
    python benchmarks/nm.py traffic            # a sparse forward with its inputs in L1 vs L2: what bounds it
    python benchmarks/nm.py epoch              # a SET-MLP epoch (784-1000-1000-1000-10): N:M vs CSR vs dense
                                               # (and the N:M model through autograd: --autograd-patterns)
    python benchmarks/nm.py memory             # bytes per stored weight, from the layers' arrays
    python benchmarks/nm.py masks              # transposable masks: greedy 2-approximation vs exact, update time
    python benchmarks/nm.py update             # one NMSET update as a share of one fused epoch of the same model
    python benchmarks/nm.py accuracy           # every pattern vs unstructured SET vs dense, 3 seeds, 2 data sets
    python benchmarks/nm.py all --quick        # everything, small (smoke run)

Speed: every measurement alternates the models side by side in one process (sparta's thread count and
torch's set to 1 or 2), ``--repeats`` times, and reports medians; the machine this ran on was shared, so the
spread is printed too. The N:M model is :class:`sparta.nn.nm_mlp.NMMLP` stepped by its fused ``train_step`` with
``sparta.optim.SGD`` (what ``sparta train --nm`` runs); the unstructured one is sparta's fused ``SparseMLP`` with
``sparta.optim.SGD`` (what ``sparta train`` runs); for the kernels, ``NMLinear`` and ``SparseLinear`` through
autograd.

Tables (markdown) go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import _common  # noqa: F401  (before torch: sets OMP_WAIT_POLICY)
import torch
from _common import fmt, machine_info, markdown_table

SIZES = [784, 1000, 1000, 1000, 10]
BATCH, LR, MOMENTUM, WD, ALPHA, DROPOUT, EPSILON, ZETA = 128, 0.01, 0.9, 2e-4, 0.6, 0.3, 20.0, 0.3
SPEED_PATTERNS = ("2:32", "1:16", "1:32", "4:64", "2:4", "4:8")
ACC_PATTERNS = ("2:4", "4:8", "1:16", "2:32", "1:32")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def set_threads(threads: int, sparse: bool) -> None:
    import numba

    from sparta.kernels.threads import configure

    numba.set_num_threads(threads)
    configure(threads, sparse=sparse)


def density_of(pattern: str) -> float:
    n, m = (int(v) for v in pattern.split(":"))
    return n / m


def alternate(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run every function ``repeats`` times, in an order that rotates each round; their returned seconds."""
    names = list(fns)
    out: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        for k in names[r % len(names):] + names[:r % len(names)]:
            out[k].append(fns[k]())
    return out


def spread(xs: list[float]) -> str:
    return f"{fmt(min(xs) * 1e3)}–{fmt(max(xs) * 1e3)}"


# ------------------------------------------------------------------------------------------------ kernels
def layer_step(layer: torch.nn.Module, batch: int, inner: int) -> Callable[[], float]:
    x = torch.randn(batch, layer.in_features, requires_grad=True)
    gy = torch.randn(batch, layer.out_features)

    def run() -> float:
        t0 = time.perf_counter()
        for _ in range(inner):
            layer.zero_grad(set_to_none=True)
            x.grad = None
            layer(x).backward(gy)
        return (time.perf_counter() - t0) / inner
    run()
    return run


def kernels(args) -> None:
    from sparta import SparseLinear
    from sparta.nn.nm import NMLinear

    rows = []
    for threads in args.threads:
        for shape in ((1000, 1000), (1024, 1024)):
            for pattern in args.patterns:
                n, m = (int(v) for v in pattern.split(":"))
                d = density_of(pattern)
                set_threads(threads, sparse=True)
                torch.manual_seed(0)
                models = {"nm": NMLinear(*shape, n, m), "csr": SparseLinear(*shape, density=d)}
                if shape[0] % m == 0 and shape[1] % m == 0:
                    models["nm-T"] = NMLinear(*shape, n, m, transposable=True)
                models["nm-V4"] = NMLinear(*shape, n, m, vector=4)  # vector-wise: groups of 4 rows share positions
                models["dense"] = torch.nn.Linear(*shape)
                fns = {k: layer_step(v, args.batch, args.inner) for k, v in models.items()}
                log(f"kernels: {shape} {pattern} at {threads} thread(s)")
                res = alternate(fns, args.repeats)
                med = {k: statistics.median(v) for k, v in res.items()}
                rows.append([threads, f"{shape[0]}→{shape[1]}", pattern, fmt(d * 100), fmt(med["nm"] * 1e3),
                             fmt(med["nm-T"] * 1e3) if "nm-T" in med else "–", fmt(med["nm-V4"] * 1e3),
                             fmt(med["csr"] * 1e3), fmt(med["dense"] * 1e3), fmt(med["csr"] / med["nm"]),
                             fmt(med["csr"] / med["nm-T"]) if "nm-T" in med else "–", fmt(med["csr"] / med["nm-V4"]),
                             fmt(med["dense"] / med["nm"]), fmt(med["dense"] / med["nm-V4"]), spread(res["nm"]),
                             spread(res["nm-V4"])])
    print(f"\n### One layer, forward + backward (x, values, bias gradients), batch {args.batch}, "
          f"median of {args.repeats} × {args.inner} steps, ms\n")
    print(markdown_table(["threads", "layer", "pattern", "density %", "N:M", "N:M transp.", "N:M V4", "CSR", "dense",
                          "CSR / N:M", "CSR / N:M T", "CSR / N:M V4", "dense / N:M", "dense / N:M V4", "N:M range",
                          "N:M V4 range"], rows))


def traffic(args) -> None:
    """What bounds a sparse forward on this CPU: sparta's CSR forward kernel (``sparta.kernels.fused.forward``) on a
    1280-row layer with 52 connections per row, batch 128, 1 thread, its connections drawn from the first ``n_in``
    inputs: with few inputs the gathered input rows stay in L1, with many they come from L2 in random order. The same
    arithmetic in every case; the GFLOP/s say what the input traffic costs."""
    import numpy as np

    from sparta.kernels import fused

    set_threads(1, sparse=True)
    rng = np.random.default_rng(0)
    n_out, fan, batch = 1280, 52, BATCH
    ld = fused.leading_dim(batch)
    y = fused.aligned_empty(n_out * ld, np.float32)
    bias, e, ec = np.zeros(n_out, np.float32), np.empty(0, np.float32), np.empty(0, np.uint8)
    one, z = np.float32(1), np.uint32(0)
    fns, flops = {}, 2 * n_out * fan * batch
    for n_in in (64, 256, 1280, 5120):
        ip = np.arange(0, (n_out + 1) * fan, fan, dtype=np.uint64)
        ix = np.concatenate([np.sort(rng.choice(n_in, fan, replace=False)) for _ in range(n_out)]).astype(np.uint32)
        v = rng.standard_normal(n_out * fan).astype(np.float32)
        x = fused.aligned_empty(n_in * ld, np.float32)
        x[:] = rng.standard_normal(x.size)

        def run(ip=ip, ix=ix, v=v, x=x) -> float:
            t0 = time.perf_counter()
            for _ in range(args.inner):
                fused.forward(ip, ix, v, bias, x, ld, 0, batch, y, e, ec, fused.MODE_LINEAR, fused.ACT_LEAKY, one, z,
                              one, z, z, 0, 1 << 62, 0)
            return (time.perf_counter() - t0) / args.inner
        run()
        fns[n_in] = run
    res = alternate(fns, args.repeats)
    rows = [[n_in, fmt(n_in * ld * 4 / 1024), fmt(statistics.median(ts) * 1e6), fmt(flops / statistics.median(ts) / 1e9)]
            for n_in, ts in res.items()]
    print(f"\n### CSR forward, {n_out} rows × {fan} connections, batch {batch}, 1 thread: inputs drawn from the "
          f"first n_in, median of {args.repeats} × {args.inner} calls\n")
    print(markdown_table(["n_in", "input KiB", "µs / call", "GFLOP/s"], rows))


# ------------------------------------------------------------------------------------------------- epoch
def build(kind: str, sizes: list[int], seed: int):
    import sparta
    from sparta.nn.nm_mlp import NMMLP
    from sparta.train.models import mlp

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    common = dict(activation="allrelu", alpha=ALPHA, dropout=DROPOUT)
    if kind == "dense":
        model = mlp(sizes, sparse=False, fused=False, **common)
        return model, torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    if kind.startswith("csr"):  # csr-eps20: the SET-MLP; csr-P: the pattern's density in the hidden layers
        if kind == "csr-eps20":
            model = mlp(sizes, epsilon=EPSILON, fused=True, generator=gen, **common)
        else:
            d = density_of(kind[4:])
            model = mlp(sizes, density=d, fused=True, generator=gen, **common)
        return model, sparta.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    autograd = kind.endswith("-autograd")  # nm-2:32-autograd: the same model through autograd and torch.optim
    pattern = kind[3:].removesuffix("-autograd")
    transposable = pattern.endswith("T")
    vector = 4 if pattern.endswith("V4") else 1  # nm-2:32V4: vector-wise (groups of 4 rows share positions)
    model = NMMLP(sizes, pattern.removesuffix("V4").rstrip("T"), transposable=transposable, generator=gen,
                  vector=vector, **common)
    return model, (torch.optim if autograd else sparta.optim).SGD(model.parameters(), lr=LR, momentum=MOMENTUM,
                                                                  weight_decay=WD)


def epoch(args) -> None:
    from sparta.nn.mlp import SparseMLP
    from sparta.train import teacher_student
    from sparta.train.loop import batch_step

    data = teacher_student(n_train=args.n_train, n_test=1000, n_features=SIZES[0], n_classes=SIZES[-1], seed=0)
    x, y = data.x_train, data.y_train
    kinds = ["dense", "csr-eps20", "csr-2:32"] + [f"nm-{p}" for p in args.epoch_patterns]
    kinds += [f"nm-{p}-autograd" for p in args.autograd_patterns]
    rows = []
    for threads in args.threads:
        built = {}
        for k in kinds:
            set_threads(threads, sparse=k != "dense")
            built[k] = build(k, SIZES, 0)

        def make(k, threads=threads, built=built):
            model, opt = built[k]

            step = autograd_step if k.endswith("-autograd") else batch_step

            def run() -> float:
                set_threads(threads, sparse=k != "dense")
                order = torch.randperm(args.n_train, generator=torch.Generator().manual_seed(1))
                t0 = time.perf_counter()
                for s in range(0, args.n_train, BATCH):
                    idx = order[s:s + BATCH]
                    step(model, opt, x.index_select(0, idx), y.index_select(0, idx), keep_grad=False)
                return time.perf_counter() - t0
            for s in range(0, 4 * BATCH, BATCH):  # warm-up: kernels compiled or loaded, pools started
                idx = torch.arange(s, s + BATCH)
                step(model, opt, x.index_select(0, idx), y.index_select(0, idx), keep_grad=False)
            return run
        fns = {k: make(k) for k in kinds}
        log(f"epoch: {args.n_train} samples at {threads} thread(s), {args.repeats} rounds of {len(kinds)} models")
        res = alternate(fns, args.repeats)
        dense = statistics.median(res["dense"])
        for k in kinds:
            med = statistics.median(res[k])
            model = built[k][0]
            kind = ("fused SparseMLP" if isinstance(model, SparseMLP) else "nn.Linear" if k == "dense"
                    else "NMMLP, autograd" if k.endswith("-autograd") else "fused NMMLP")
            rows.append([threads, k, kind, fmt(med), f"{fmt(min(res[k]))}–{fmt(max(res[k]))}", fmt(dense / med)])
    print(f"\n### SET-MLP epoch ({'-'.join(map(str, SIZES))}, batch {BATCH}, {args.n_train} teacher–student samples, "
          f"All-ReLU, dropout {DROPOUT}, SGD momentum + weight decay), median of {args.repeats}, seconds\n")
    print(markdown_table(["threads", "model", "implementation", "s / epoch", "range", "× dense"], rows))


def autograd_step(model, opt, xb: torch.Tensor, yb: torch.Tensor, keep_grad: bool = False) -> None:
    """The step through autograd (what ``sparta train --nm`` ran before the fused step): forward, loss,
    ``backward``, ``torch.optim.SGD``."""
    loss = torch.nn.functional.cross_entropy(model(xb), yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


# ------------------------------------------------------------------------------------------------ memory
def memory(args) -> None:
    from sparta import SparseLinear
    from sparta.nn.nm import NMLinear

    rows = []
    for pattern in args.patterns:
        n, m = (int(v) for v in pattern.split(":"))
        for name, layer in (("N:M", NMLinear(1024, 1024, n, m)),
                            ("N:M transposable", NMLinear(1024, 1024, n, m, transposable=True)),
                            ("CSR (+ CSC copy)", SparseLinear(1024, 1024, density=n / m))):
            if isinstance(layer, SparseLinear):
                layer(torch.randn(4, 1024, requires_grad=True)).sum().backward()  # builds the CSC copy
                colptr, rowidx, perm = layer.transposed()
                arrays = [layer.values, layer.indices, layer.indptr]
                extra = colptr.nbytes + rowidx.nbytes + perm.nbytes
            else:
                arrays = [layer.values, layer.pos, layer.tpos]
                extra = 0
            total = sum(a.numel() * a.element_size() for a in arrays) + extra
            rows.append([pattern, name, layer.nnz, fmt(total / layer.nnz)])
    print("\n### Bytes per stored weight (float32 values; 1024→1024 layer; the arrays each layer holds)\n")
    print(markdown_table(["pattern", "layout", "weights", "bytes / weight"], rows))


# ------------------------------------------------------------------------------------------------- masks
def masks(args) -> None:
    from sparta.nn.nm import magnitude_mask
    from sparta.nn.nm_mlp import NMMLP
    from sparta.topology.nm import NMSET, kept_fraction, transposable_exact

    gen = torch.Generator().manual_seed(0)
    rows = []
    for pattern in args.patterns:
        n, m = (int(v) for v in pattern.split(":"))
        w = torch.randn(1024, 1024, generator=gen, dtype=torch.float64).abs()
        t0 = time.perf_counter()
        greedy = magnitude_mask(w, n, m, transposable=True)
        t_greedy = time.perf_counter() - t0
        # exact on a sample of blocks (min-cost flow per block is slow in pure Python)
        nb = 1024 // m
        picks = torch.randperm(nb * nb, generator=gen)[:args.exact_blocks]
        kg = ke = 0.0
        for p in picks.tolist():
            r, c = divmod(p, nb)
            blk = w[r * m:(r + 1) * m, c * m:(c + 1) * m]
            kg += float(blk[greedy[r * m:(r + 1) * m, c * m:(c + 1) * m]].sum())
            ke += float(blk[transposable_exact(blk, n, m)].sum())
        rows.append([pattern, fmt(kept_fraction(w, magnitude_mask(w, n, m)) * 100), fmt(kept_fraction(w, greedy) * 100),
                     fmt(kg / ke * 100), len(picks), fmt(t_greedy * 1e3)])
    print("\n### Transposable masks on |W|, W ~ N(0, 1) 1024×1024: greedy 2-approximation vs exact min-cost flow\n")
    print(markdown_table(["pattern", "plain N:M keeps % of |W|", "greedy T keeps % of |W|",
                          "greedy / exact % (sampled blocks)", "blocks compared", "greedy ms (whole layer)"], rows))
    # one NMSET update of a SET-MLP-sized NMMLP (hidden widths 1024 so that every pattern can be transposable)
    rows = []
    sizes = [1024, 1024, 1024, 1024, 10]
    for pattern in args.patterns:
        for transposable in (False, True):
            model = NMMLP(sizes, pattern, transposable=transposable, generator=gen)
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            topo = NMSET(model, opt, zeta=ZETA, every=10**9)
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                topo.update()
                times.append(time.perf_counter() - t0)
            rows.append([pattern, "yes" if transposable else "no", fmt(statistics.median(times))])
    print("\n### One NMSET update (drop ζ = 0.3, regrow in the emptied blocks), 1024-1024-1024-1024-10, "
          f"median of {args.repeats}, seconds (compare with the epoch table)\n")
    print(markdown_table(["pattern", "transposable", "s / update"], rows))


def update(args) -> None:
    """One NMSET update against one fused epoch of the same model, timed in turn in each round (1 thread)."""
    from sparta.topology.nm import NMSET, check_nm
    from sparta.train import teacher_student
    from sparta.train.loop import batch_step

    sizes = [1024, 1024, 1024, 1024, 10]  # every pattern can be transposable at this width
    data = teacher_student(n_train=args.n_train, n_test=1000, n_features=sizes[0], n_classes=sizes[-1], seed=0)
    x, y = data.x_train, data.y_train
    set_threads(1, sparse=True)
    rows = []
    for pattern in args.epoch_patterns:
        for transposable in ((False,) if pattern.endswith(("V4", "T")) else (False, True)):
            model, opt = build(f"nm-{pattern}{'T' if transposable else ''}", sizes, 0)
            topo = NMSET(model, opt, zeta=ZETA, every=10**9, seed=0)
            epochs, updates = [], []
            for r in range(args.repeats + 1):  # round 0: warm-up (kernels compiled or loaded)
                n = args.n_train if r else 4 * BATCH
                order = torch.randperm(args.n_train, generator=torch.Generator().manual_seed(r))[:n]
                t0 = time.perf_counter()
                for s in range(0, n, BATCH):
                    idx = order[s:s + BATCH]
                    batch_step(model, opt, x.index_select(0, idx), y.index_select(0, idx), keep_grad=False)
                t1 = time.perf_counter()
                topo.update()
                t2 = time.perf_counter()
                check_nm(model)
                if r:
                    epochs.append(t1 - t0)
                    updates.append(t2 - t1)
            share = [u / e * 100 for u, e in zip(updates, epochs, strict=True)]
            rows.append([pattern, "yes" if transposable or pattern.endswith("T") else "no", fmt(statistics.median(epochs)),
                         fmt(statistics.median(updates)), fmt(statistics.median(share)), f"{fmt(min(share))}–{fmt(max(share))}"])
    print(f"\n### One NMSET update (ζ = {ZETA}) against one fused epoch ({args.n_train} samples, batch {BATCH}) of "
          f"the same {'-'.join(map(str, sizes))} NMMLP, 1 thread, median of {args.repeats} rounds\n")
    print(markdown_table(["pattern", "transposable", "s / epoch", "s / update", "update % of epoch", "range %"], rows))


# ---------------------------------------------------------------------------------------------- accuracy
def accuracy(args) -> None:
    from sparta.nn.nm_mlp import NMMLP
    from sparta.topology import SET
    from sparta.topology.nm import NMSET
    from sparta.train import digits
    from sparta.train.data import classification
    from sparta.train.loop import fit
    from sparta.train.models import mlp

    set_threads(args.threads[0], sparse=True)
    sets = {
        "digits": (lambda s: digits(seed=s), [64, 256, 256, 10], args.epochs),
        "classification 1024": (lambda s: classification(seed=s, n_train=args.acc_train, n_test=args.acc_train // 4,
                                                         n_features=1024, n_informative=20, n_classes=10),
                                [1024, 1024, 1024, 10], args.epochs_large),
    }
    rows = []
    for name, (load, sizes, epochs) in sets.items():
        configs: list[tuple[str, str | None, bool, float | None, int]] = [("dense", None, False, None, 1)]
        for d in sorted({density_of(p) for p in args.acc_patterns}, reverse=True):
            configs.append((f"SET {fmt(d * 100)} %", None, False, d, 1))
        for p in args.acc_patterns:
            for variant in args.acc_variants:  # plain, T (transposable), V4 (vector-wise, groups of 4 rows)
                configs.append((f"N:M {p}" + ("" if variant == "plain" else f" {variant}"), p, variant == "T", None,
                                4 if variant == "V4" else 1))
        for label, pattern, transposable, density, vector in configs:
            accs = []
            for seed in range(args.seeds):
                data = load(seed)
                torch.manual_seed(seed)
                gen = torch.Generator().manual_seed(seed)
                common = dict(activation="allrelu", alpha=ALPHA, dropout=DROPOUT)
                if pattern is not None:
                    model = NMMLP(sizes, pattern, transposable=transposable, generator=gen, vector=vector, **common)
                elif density is not None:
                    model = mlp(sizes, density=density, fused=False, dense_last=True, generator=gen, **common)
                else:
                    model = mlp(sizes, sparse=False, fused=False, **common)
                opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
                steps = -(-len(data.x_train) // BATCH)
                algo = None
                if pattern is not None:
                    algo = NMSET(model, opt, zeta=ZETA, every=steps, seed=seed)
                elif density is not None:
                    algo = SET(model, opt, zeta=ZETA, every=steps, seed=seed)
                hist = fit(model, opt, data, epochs=epochs, batch_size=BATCH, algo=algo, seed=seed)
                accs.append(hist[-1].test_acc)
                log(f"accuracy: {name} {label} seed {seed}: {accs[-1]:.4f}")
            mean = statistics.mean(accs)
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            rows.append([name, label, fmt(mean * 100, 4), fmt(sd * 100, 2), " ".join(fmt(a * 100, 4) for a in accs)])
    print(f"\n### Test accuracy after {args.epochs} (digits) and {args.epochs_large} (classification) epochs, "
          f"{args.seeds} seeds (mean, standard deviation, each), %; "
          "SET-MLP settings (All-ReLU 0.6, dropout 0.3, SGD 0.01/0.9/2e-4, batch 128, SET/NMSET ζ = 0.3 per epoch); "
          "the output layer dense everywhere\n")
    print(markdown_table(["data", "model", "mean %", "sd", "seeds"], rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("kernels", "traffic", "epoch", "memory", "masks", "update", "accuracy", "all"))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--patterns", nargs="+", default=list(SPEED_PATTERNS))
    ap.add_argument("--epoch-patterns", nargs="+", default=["2:32", "1:16", "2:4", "2:32V4", "1:16V4"],
                    help="epoch: N:M models (a T suffix: transposable; V4: vector-wise, groups of 4 rows)")
    ap.add_argument("--autograd-patterns", nargs="*", default=["2:32"],
                    help="epoch: patterns also timed through autograd (the step before the fused one)")
    ap.add_argument("--acc-patterns", nargs="+", default=list(ACC_PATTERNS))
    ap.add_argument("--acc-variants", nargs="+", choices=("plain", "T", "V4"), default=["plain", "T", "V4"],
                    help="accuracy: which N:M variants of each pattern (T: transposable; V4: vector-wise)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--inner", type=int, default=20)
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--n-train", type=int, default=60_000)
    ap.add_argument("--acc-train", type=int, default=4096)
    ap.add_argument("--epochs", type=int, default=40, help="accuracy: epochs on digits")
    ap.add_argument("--epochs-large", type=int, default=10, help="accuracy: epochs on the 1024-feature set")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--exact-blocks", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="small sizes and few repeats (a smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.inner, args.n_train, args.acc_train = 2, 2, 2048, 1024
        args.epochs, args.epochs_large, args.seeds, args.exact_blocks = 1, 1, 2, 4
        args.patterns, args.epoch_patterns, args.acc_patterns = ["2:32", "2:4"], ["2:32"], ["2:4"]
        args.autograd_patterns = ["2:32"]
    info = machine_info()
    print(f"sparta N:M benchmark `{' '.join(sys.argv[1:])}` — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"{info.get('cpu', '?')}; load {info.get('load_average', '?')}; a shared machine: medians, ranges beside them")
    for what in ("kernels", "traffic", "epoch", "memory", "masks", "update", "accuracy"):
        if args.what in (what, "all"):
            globals()[what](args)


if __name__ == "__main__":
    main()
