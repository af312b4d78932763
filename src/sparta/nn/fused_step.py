"""The fused step of :class:`~sparta.nn.SparseMLP`, moved here from :mod:`sparta.nn.mlp` unchanged: the batch
workspaces and their reuse (:class:`_Workspace`, :class:`_FusedRunner`), the autograd Function that runs a whole
network's forward and backward as fused numba passes (:class:`_FusedMLPFunction`), the gradient sets and
reductions of the batch split, and the per-layer passes of layer mode (:func:`_layer_forward`,
:func:`_layer_backward`, with the update inside the backward). :mod:`sparta.nn.mlp` holds the module itself,
the structure it caches per topology (``_Structure``) and the thresholds that choose between the modes."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sparta.kernels import atomics, bf16, fused
from sparta.kernels import optim as optim_kernels
from sparta.kernels.threads import POOL

if TYPE_CHECKING:
    from sparta.nn.mlp import _Structure

MAX_FREE_WORKSPACES = 4  # buffers kept for the next forwards (training batch, last batch, evaluation …)
BIG_WORKSPACE_BYTES = 1 << 26  # batch buffers above this: one set per module (see _FusedRunner.workspace)
UPDATE_BLOCK = 1 << 16  # value gradients a thread holds at once when train_step applies the update in the backward
_U0 = np.uint64(0)


class _Workspace:
    """Buffers of one forward, kept until its backward: activations, what backward needs of each hidden
    activation (a byte code for leaky activations, else a float derivative), output-gradient buffers and
    per-part gradient scratch.

    ``tiled`` (the batch-split passes): activations are tile-major, each tile of :data:`fused.T` samples an
    ``(n, T)`` block (:func:`fused.forward_pass`), and each part of the batch has its own output-gradient
    scratch of one tile. Otherwise (layer mode) they are feature-major over the whole batch, row stride ``ld``.
    ``half``: the hidden activations are bfloat16 (``uint16``, :mod:`sparta.kernels.bf16`); the input and the
    outputs stay ``dtype``.
    """

    def __init__(self, sizes: list[int], batch: int, dtype: np.dtype, parts: list[tuple[int, int]],
                 train: bool, leaky: bool, tiled: bool, half: bool = False) -> None:
        self.key = (tuple(sizes), batch, dtype, tuple(parts), leaky, tiled, half)
        self.sizes, self.batch, self.dtype, self.parts, self.train, self.leaky = sizes, batch, dtype, parts, train, leaky
        self.tiled = tiled
        self.ld = ld = fused.T if tiled else fused.leading_dim(batch)
        span = -(-batch // fused.T) * fused.T if tiled else ld  # elements per feature
        empty, empty_code = np.empty(0, dtype), np.empty(0, np.uint8)
        hidden = range(1, len(sizes) - 1)
        self.acts = tuple(fused.aligned_empty(n * span, np.uint16 if half and j in hidden else dtype)
                          for j, n in enumerate(sizes))  # acts[0]: input, acts[-1]: output
        self.ds = tuple(fused.aligned_empty(sizes[j] * span, dtype) if train and not leaky and j in hidden else empty
                        for j in range(len(sizes)))
        self.codes = tuple(fused.aligned_empty(sizes[j] * span, np.uint8) if train and leaky and j in hidden
                           else empty_code for j in range(len(sizes)))
        widest = max(sizes)
        # output-gradient scratch (two buffers) and the input gradient: one tile per part, or the whole batch
        self.scratch = [tuple(fused.aligned_empty(n * ld, dtype) for n in (widest, widest, sizes[0]))
                        for _ in (parts if tiled else [0])]
        self.half = half  # and the output gradients of hidden layers (layer mode): two bfloat16 buffers
        self.half_scratch = tuple(fused.aligned_empty(widest * ld, np.uint16) for _ in range(2 if half else 0))
        self.bias_parts = [tuple(np.empty(n, dtype) for n in sizes[1:]) for _ in parts]
        self.grad_parts: list[tuple[np.ndarray, ...]] = []  # value-gradient scratch of parts 1, 2, …
        self._values = empty  # a hidden layer's value gradients in CSC order (layer mode, see value_scratch)
        self.empty = empty
        self.nbytes = sum(a.nbytes for a in (*self.acts, *self.ds, *self.codes, *(b for t in self.scratch for b in t),
                                             *self.half_scratch))
        self.generation = 0  # bumped by each training forward that takes these buffers
        self.backward_done = False  # the latest graph on these buffers has run its backward

    def matches(self, key: tuple, train: bool) -> bool:
        return self.key == key and (self.train or not train)

    def inputs(self, j: int) -> np.ndarray:
        """Layer ``j``'s input activations as ``(n_j, batch)`` (a view, or a copy when tile-major)."""
        n, batch, ld = self.sizes[j], self.batch, self.ld
        a = self.acts[j] if self.acts[j].dtype != np.uint16 else bf16.from_bf16(self.acts[j])
        if not self.tiled:
            return a.reshape(n, ld)[:, :batch]
        tiles = -(-batch // ld)
        return a.reshape(tiles, n, ld).transpose(1, 0, 2).reshape(n, tiles * ld)[:, :batch]

    def value_scratch(self, n: int) -> np.ndarray:
        """``(n,)`` scratch for one layer's value gradients in CSC order (layer mode, :func:`fused.gather_sddmm`),
        kept for the next steps; the largest hidden layer with a CSC copy sets its size."""
        if self._values.shape[0] < n:
            self._values = np.empty(0, self.dtype)  # free the old one before the new one is allocated
            self._values = np.empty(n, self.dtype)
            self.nbytes += self._values.nbytes
        return self._values[:n]

    def drop_buffers(self) -> None:
        """Free the buffers of a graph that has run its backward (a second backward of it then raises)."""
        self.generation += 1
        self.key = None
        empty = self.empty
        self.acts = self.ds = tuple(empty for _ in self.sizes)
        self.codes = tuple(np.empty(0, np.uint8) for _ in self.sizes)
        self.scratch, self.grad_parts, self.half_scratch, self.nbytes = [], [], (), 0
        self._values = empty


class _FusedRunner:
    """Free workspaces for the next forwards of a module."""

    def __init__(self) -> None:
        self.free: list[_Workspace] = []
        self.done: list[weakref.ref] = []  # big workspaces whose graph is alive but has run its backward
        self.arrays: tuple | None = None  # (key, _Structure) — see _structure
        self.checked: tuple | None = None  # (arrays, layers, mode, structure) sparta.nn.small.infer_numpy checked
        self.infer_scratch: tuple | None = None  # its two hidden-layer buffers

    def clear(self) -> None:
        self.free = []
        self.done = []
        self.arrays = None
        self.checked = None

    def __deepcopy__(self, memo: dict) -> _FusedRunner:  # a copy of the module starts with empty caches
        return _FusedRunner()

    def __getstate__(self) -> dict:
        return {"free": [], "done": [], "arrays": None, "checked": None, "infer_scratch": None}

    def release(self, ws: _Workspace, generation: int) -> None:
        """A graph was freed: its buffers are free unless a later forward already took them."""
        if ws.generation == generation:
            self.free.append(ws)

    def workspace(self, sizes: list[int], batch: int, dtype: np.dtype, parts: list[tuple[int, int]],
                  train: bool, leaky: bool, tiled: bool, half: bool = False) -> _Workspace:
        key = (tuple(sizes), batch, dtype, tuple(parts), leaky, tiled, half)
        for i, ws in enumerate(self.free):
            if ws.matches(key, train):
                return self.free.pop(i)
        # a big network: the buffers of a graph that is still referenced (the previous step's loss is
        # usually alive during the next forward) but has run its backward are taken over rather than
        # doubled; a second backward of that graph then raises instead of reading overwritten buffers
        self.done = [r for r in self.done if (w := r()) is not None and w.backward_done]
        for i, r in enumerate(self.done):
            ws = r()
            if ws is not None and ws.matches(key, train):
                del self.done[i]
                return ws
        for r in self.done:  # another shape (Importance Pruning shrank the layers): free the old set first
            if (ws := r()) is not None:
                ws.drop_buffers()
        del self.free[:-(MAX_FREE_WORKSPACES - 1) or None]  # keep the most recent few shapes
        if fused.leading_dim(batch) * sum(sizes) * dtype.itemsize > BIG_WORKSPACE_BYTES or \
                any(w.nbytes > BIG_WORKSPACE_BYTES for w in self.free):
            self.free.clear()  # a big network: never hold a second set of batch buffers
            self.done.clear()
        return _Workspace(sizes, batch, dtype, parts, train, leaky, tiled, half)


class _FusedMLPFunction(torch.autograd.Function):
    """Forward and backward of a whole ``SparseMLP`` whose layers are all ``SparseLinear`` on CPU.

    ``forward(x, mlp, st, rng, grad, *params)``: ``st`` is ``mlp``'s :class:`_Structure`; ``params`` are each
    layer's values and bias (an empty tensor for a layer without bias), passed so that autograd routes their
    gradients; ``rng`` is the dropout's ``(seed, step)`` or None; ``grad`` whether the caller had grad mode on.
    """

    @staticmethod
    def forward(ctx, x, mlp, st, rng, grad, *params):  # type: ignore[override]
        dtype = st.dtype
        batch = x.shape[0]
        parts, threads = st.split(batch)
        grad = bool(grad)
        mode = fused.MODE_TRAIN if (grad or rng is not None) else fused.MODE_EVAL
        runner: _FusedRunner = mlp._runner
        ws = runner.workspace(st.sizes, batch, dtype, parts, mode == fused.MODE_TRAIN, st.leaky, not st.layer_mode,
                              st.half)
        k1s, k2s, thr = st.dropout_keys(rng)
        out = torch.empty(batch, st.sizes[-1], dtype=x.dtype)
        xn, outn = x.detach().contiguous().numpy(), out.numpy()
        if st.layer_mode:
            _layer_forward(st.arrays, ws, xn, outn, mode, st.act, st.slopes, thr, st.scale, k1s, k2s, threads)
        else:  # one thread: POOL.run runs the parts in order on the caller
            POOL.run([lambda c0=c0, c1=c1: fused.forward_pass(*st.arrays, ws.acts, ws.ds, ws.codes, xn, outn, c0, c1,
                                                              mode, st.act, st.slopes, thr, st.scale, k1s, k2s)
                      for c0, c1 in parts], threads, key=(id(runner), mode, batch))
        ws.generation += 1
        ws.backward_done = False
        ctx.generation = ws.generation
        if grad:  # the buffers go back to the pool when the graph is freed (any number of backward calls)
            weakref.finalize(ctx, runner.release, ws, ws.generation)
        else:
            runner.free.append(ws)
        ctx.ws, ctx.mlp, ctx.st, ctx.threads = ws, mlp, st, threads
        ctx.save_for_backward(*st.values)
        return out

    @staticmethod
    def backward(ctx, gy):  # type: ignore[override]
        ws: _Workspace = ctx.ws
        values = ctx.saved_tensors  # autograd checks here that no value changed in place since forward
        if ws.generation != ctx.generation:
            raise RuntimeError("this SparseMLP graph's activation buffers were reused by a later forward (networks "
                               f"whose batch buffers exceed {BIG_WORKSPACE_BYTES >> 20} MB keep one set): run "
                               "backward before the next forward")
        st: _Structure = ctx.st
        layers, n_layers = st.layers, st.n
        dtype, batch, parts = ws.dtype, ws.batch, ws.parts
        empty = ws.empty
        needs = ctx.needs_input_grad
        need_x = needs[0]
        need_v = st.need_v if all(needs[5::2]) else np.array(needs[5::2], np.bool_)
        need_b = [needs[6 + 2 * j] and st.has_bias[j] for j in range(n_layers)]
        grads = [torch.empty_like(v) if need_v[j] else None for j, v in enumerate(values)]
        gsets = _grad_sets(st, ws, parts, grads)
        csc = st.transposed()
        gyn = gy.detach().to(values[0].dtype).contiguous().numpy()
        dx = torch.empty(batch, ws.sizes[0], dtype=values[0].dtype) if need_x else None
        dxn = dx.numpy() if dx is not None else np.empty((0, ws.sizes[0]), dtype)
        # gradient-based growth (RigL) reads each captured layer's input and output gradient, (n, batch)
        captured = [m.capture is not None for m in layers]
        caps = tuple(np.empty(m.out_features * batch, dtype) if c else empty
                     for m, c in zip(layers, captured, strict=True)) if any(captured) else st.no_caps
        ip, ix, vals, _ = st.arrays
        luts1, luts2, use_csc = st.luts1, st.luts2, st.use_csc

        def run(p: int, c0: int, c1: int) -> None:
            fused.backward_pass(ip, ix, vals, *csc, ws.acts, ws.ds, ws.codes, gyn, gsets[p], ws.bias_parts[p], caps,
                                *ws.scratch[p], dxn, c0, c1, luts1, luts2, need_v, need_x, use_csc)

        if st.layer_mode:
            _layer_backward(ip, ix, vals, csc, st.inverse, ws, gyn, gsets[0], ws.bias_parts[0], caps, dxn, luts1,
                            luts2, need_v, need_x, use_csc, ctx.threads)
        else:
            POOL.run([lambda p=p, c0=c0, c1=c1: run(p, c0, c1) for p, (c0, c1) in enumerate(parts)], ctx.threads,
                     key=(id(ctx.mlp._runner), -1, batch))  # timed per key: serial when that is faster
        dbias = _reduce_grads(st, ws, parts, grads, gsets, need_b)
        for j, m in enumerate(layers):
            if m.capture is not None and caps[j].size:
                m.capture["xt"] = torch.from_numpy(np.ascontiguousarray(ws.inputs(j)))
                m.capture["dyt"] = torch.from_numpy(caps[j]).view(m.out_features, batch)
        if ws.nbytes > BIG_WORKSPACE_BYTES and not ws.backward_done:
            ctx.mlp._runner.done.append(weakref.ref(ws))  # the next forward may take these buffers over
        ws.backward_done = True
        out: list[Any] = [dx, None, None, None, None]
        for j in range(n_layers):
            out += [grads[j], dbias[j]]
        return tuple(out)


def _loss_and_right(stats: np.ndarray, batch: int) -> tuple[float, int]:
    """The batch's mean loss and correct count from the parts' ``stats (parts, 2)`` (loss sum, correct)."""
    loss_sum, right = stats.sum(axis=0).tolist()
    return loss_sum / batch, int(right)


def _grad_sets(st: _Structure, ws: _Workspace, parts: list[tuple[int, int]], grads: list[torch.Tensor | None],
               scratch_only: bool = False) -> list[tuple[np.ndarray, ...]]:
    """Each part's value-gradient arrays: part 0 writes into ``grads`` (None: not needed), the others into
    per-part scratch kept with the workspace; with ``scratch_only`` every part writes into scratch (the
    gradients go into the optimizer's update inside the run, :class:`_PartsUpdate`)."""
    if any([g.size for g in gp] != st.nnz for gp in ws.grad_parts):  # the topology changed since allocated
        ws.grad_parts = []
    need = len(parts) if scratch_only else len(parts) - 1
    while len(ws.grad_parts) < need:
        ws.grad_parts.append(tuple(np.empty(n, ws.dtype) for n in st.nnz))
    if scratch_only:
        return ws.grad_parts[:need]
    return [tuple(g.numpy() if g is not None else ws.empty for g in grads)] + ws.grad_parts


class _PartsUpdate:
    """The optimizer's update of the values and biases inside a batch-split training run: each part counts itself
    in and out, and the threads that ran parts then share the update, each block summing the parts' gradients in
    part order and applying the plan's kernel (:func:`sparta.kernels.optim.apply_parts`), so the run needs
    no second hand-off, no stored gradient leaves it, and the numbers are those of ``optimizer.step()`` after
    the gradients are summed."""

    def __init__(self, plan: list, gsets: list[tuple[np.ndarray, ...]], n_parts: int) -> None:
        self.sync = np.zeros(optim_kernels.SYNC_SIZE, np.int64)
        self.n_parts = n_parts
        self.kind = plan[0].kind
        self.ps = tuple(u.p for u in plan)
        self.s1s = tuple(u.s1 for u in plan)
        self.s2s = tuple(u.s2 for u in plan)
        self.hypers = np.zeros((len(plan), optim_kernels.HYPER_SIZE), np.float64)
        for j, u in enumerate(plan):
            self.hypers[j, :u.hyper.shape[0]] = u.hyper
        self.gparts = tuple(gsets)

    def start(self) -> None:
        atomics.add(self.sync, optim_kernels.SYNC_STARTED, 1)

    def finish(self, ok: bool) -> None:
        atomics.add(self.sync, optim_kernels.SYNC_DONE if ok else optim_kernels.SYNC_FAILED, 1)
        if ok:
            optim_kernels.apply_parts(self.sync, self.n_parts, self.kind, self.ps, self.s1s, self.s2s, self.hypers,
                                      self.gparts, optim_kernels.PART_BLOCK)


def _reduce_grads(st: _Structure, ws: _Workspace, parts: list[tuple[int, int]], grads: list[torch.Tensor | None],
                  gsets: list[tuple[np.ndarray, ...]], need_b: Sequence[bool]) -> list[torch.Tensor | None]:
    """Add the other parts' value gradients into part 0's (in ``grads``), in part order (reproducible); returns
    the bias gradients summed the same way (None where ``need_b`` is False)."""
    for j in range(st.n):
        for p in range(1, len(parts)):
            if grads[j] is not None:
                np.add(gsets[0][j], gsets[p][j], out=gsets[0][j])
    dbias: list[torch.Tensor | None] = []
    for j in range(st.n):
        b = None
        if need_b[j]:
            b = ws.bias_parts[0][j].copy()
            for p in range(1, len(parts)):
                b += ws.bias_parts[p][j]
            b = torch.from_numpy(b)
        dbias.append(b)
    return dbias


def _ranges(ptr: np.ndarray, parts: int) -> list[tuple[int, int]]:
    """``parts`` ranges of rows (or columns) of a pointer array ``ptr (n+1,)`` holding about equal connections."""
    n, total = ptr.shape[0] - 1, int(ptr[-1])
    if parts <= 1 or n <= 1:
        return [(0, n)]
    cuts = np.searchsorted(ptr.view(np.int64), [total * k // parts for k in range(1, parts)], side="right") - 1
    bounds = [0, *sorted({int(min(max(c, 0), n)) for c in cuts}), n]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def _layer_forward(args: tuple, ws: _Workspace, xn: np.ndarray, outn: np.ndarray, mode: int, act: int,
                   slopes: np.ndarray, thr: np.uint32, scale: Any, k1s: np.ndarray, k2s: np.ndarray,
                   threads: int) -> None:
    """The forward for big layers: the whole batch through one layer at a time, each layer's rows split over
    the threads (no per-thread copies of anything; a hand-off per layer is nothing next to its work)."""
    ips, ixs, vals, biases = args
    ld, batch, last = ws.ld, ws.batch, len(vals) - 1
    acts, ds, codes = ws.acts, ws.ds, ws.codes
    one, z = slopes.dtype.type(1), np.uint32(0)
    fused.to_feature_major(xn, 0, batch, acts[0], ld)
    for j in range(len(vals)):
        if j == last:
            spec = (fused.MODE_LINEAR, act, one, z, one, z, z)
        else:
            spec = (mode, act, slopes[j], thr, scale, k1s[j], k2s[j])
        POOL.run([lambda r0=r0, r1=r1, j=j, spec=spec: fused.forward(
            ips[j], ixs[j], vals[j], biases[j], acts[j], ld, 0, batch, acts[j + 1], ds[j + 1], codes[j + 1], *spec,
            r0, r1, 0) for r0, r1 in _ranges(ips[j], threads)], threads)
    fused.from_feature_major(acts[-1], ld, 0, batch, outn)


def _layer_backward(ips: tuple, ixs: tuple, vals: tuple, csc: tuple, inverse: Callable[[int], np.ndarray],
                    ws: _Workspace, gyn: np.ndarray, grads: tuple, dbs: tuple, caps: tuple, dxn: np.ndarray,
                    luts1: np.ndarray, luts2: np.ndarray, need_v: np.ndarray, need_x: bool, use_csc: np.ndarray,
                    threads: int, plan: list | None = None, longest_row: int = 0) -> None:
    """The backward for big layers, layer by layer: value gradients split over the threads by rows (by input
    columns where they come with the input gradient, below), input gradients by input columns (a gather over the
    CSC copy, or a scatter in which each thread owns a range of input rows); every number is computed by one
    thread, so results do not depend on the thread count.

    Hidden layers with a CSC copy take their value and input gradients in one pass over it
    (:func:`fused.gather_sddmm`: each output-gradient row is read once for both), the value gradients into the
    workspace's scratch in CSC order (:meth:`_Workspace.value_scratch`; threads split the columns, so they never
    write the same cache line), then back in CSR order by ``inverse(j)`` (:meth:`_Structure.inverse`).

    ``plan`` (one :class:`sparta.optim.FusedUpdate` per layer): the optimizer's update happens in the backward
    and no value gradient is handed over. A hidden layer with a CSC copy takes its value gradients from that
    scratch, each thread updating a range of its values (:func:`fused.csc_update`); any other layer forms its
    input gradient first (from the values before the step), then each thread computes the gradients of a
    block of its rows into a scratch of ``max(UPDATE_BLOCK, longest_row)`` elements and applies the update to
    those values at once (:func:`fused.sddmm_update`).

    With ``ws.half``, the output gradient of a hidden layer whose input gradient is a gather (``use_csc``) is
    stored as bfloat16 (``ws.half_scratch``), like the activations; a scatter accumulates into float32."""
    colptrs, rowidxs, perms = csc
    ld, batch, n_layers = ws.ld, ws.batch, len(vals)
    acts, ds, codes = ws.acts, ws.ds, ws.codes
    cur, nxt, dxbuf = ws.scratch[0]
    pools = (cur, nxt), ws.half_scratch
    fused.to_feature_major(gyn, 0, batch, cur, ld)
    fused.row_sums(cur, ld, 0, batch, dbs[-1], False)
    scratch = [np.empty(max(UPDATE_BLOCK, longest_row), ws.dtype) for _ in range(threads)] if plan else []
    for j in range(n_layers - 1, -1, -1):
        n_out = dbs[j].shape[0]
        if caps[j].shape[0]:
            rows = cur[:n_out * ld].reshape(n_out, ld)[:, :batch]
            caps[j].reshape(n_out, batch)[:] = bf16.from_bf16(rows) if rows.dtype == np.uint16 else rows
        hidden = j > 0
        if hidden:  # where this layer's input gradient goes: a buffer of the right type not holding cur
            nxt = next(b for b in pools[bool(ws.half and use_csc[j])] if b is not cur)
        if hidden and need_v[j] and use_csc[j] and fused.FUSE_BACKWARD:
            g = ws.value_scratch(vals[j].shape[0])  # in CSC order: each thread writes its own columns' range
            POOL.run([lambda a=a, b=b, j=j, cur=cur, nxt=nxt, g=g: fused.gather_sddmm(
                colptrs[j], rowidxs[j], perms[j], vals[j], cur, acts[j], ld, 0, batch, nxt, ds[j], codes[j], luts1[j],
                luts2[j], dbs[j - 1], g, False, False, a, b) for a, b in _ranges(colptrs[j], threads)], threads)
            inv, n = inverse(j), g.shape[0]
            spans = [(n * k // threads, n * (k + 1) // threads) for k in range(threads)]
            if plan is None:  # back in CSR order, each thread a range of it
                POOL.run([lambda a=a, b=b, g=g, inv=inv, out=grads[j]: fused.csr_order(g, inv, out, a, b)
                          for a, b in spans if b > a], threads)
            else:
                u = plan[j]
                POOL.run([lambda a=a, b=b, g=g, inv=inv, u=u, buf=buf: fused.csc_update(
                    g, inv, a, b, buf, u.kind, u.p, u.s1, u.s2, u.hyper) for (a, b), buf in zip(spans, scratch,
                                                                                                strict=True) if b > a],
                         threads)
            cur = nxt
            continue
        if need_v[j] and plan is None:
            POOL.run([lambda a=a, b=b, j=j, cur=cur: fused.sddmm(ips[j], ixs[j], cur, acts[j], ld, 0, batch, grads[j],
                                                                  _U0, False, a, b) for a, b in _ranges(ips[j], threads)],
                     threads)
        if hidden or need_x:
            target = nxt if hidden else dxbuf
            db = dbs[j - 1] if hidden else dbs[0]
            if use_csc[j]:
                POOL.run([lambda a=a, b=b, j=j, cur=cur, target=target, db=db, hidden=hidden: fused.gather(
                    colptrs[j], rowidxs[j], perms[j], vals[j], cur, ld, 0, batch, target, ds[j], codes[j], luts1[j],
                    luts2[j], db, hidden, False, a, b) for a, b in _ranges(colptrs[j], threads)], threads)
            else:
                n_in = ws.sizes[j]
                cols = [(n_in * k // threads, n_in * (k + 1) // threads) for k in range(threads)]
                POOL.run([lambda a=a, b=b, j=j, cur=cur, target=target: fused.scatter(
                    ips[j], ixs[j], vals[j], cur, ld, 0, batch, target, a, b) for a, b in cols if b > a], threads)
                if hidden:
                    POOL.run([lambda a=a, b=b, j=j, target=target, db=db: fused.apply_derivative(
                        target, ds[j], codes[j], luts1[j], luts2[j], ld, 0, batch, db, False, a, b)
                        for a, b in cols if b > a], threads)
        if plan is not None and need_v[j]:
            u = plan[j]
            POOL.run([lambda a=a, b=b, j=j, cur=cur, g=g, u=u: fused.sddmm_update(
                ips[j], ixs[j], cur, acts[j], ld, 0, batch, a, b, g, u.kind, u.p, u.s1, u.s2, u.hyper)
                for (a, b), g in zip(_ranges(ips[j], threads), scratch, strict=False)], threads)
        if hidden:
            cur = nxt
    if need_x:
        fused.from_feature_major(dxbuf, ld, 0, batch, dxn)
