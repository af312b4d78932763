"""``NMLinear``: a linear layer whose weight is N:M sparse (``N`` connections in every block of ``M`` consecutive
inputs of a row), stored compactly and trained truly sparsely; optionally *transposable* (N:M along the columns
too, so that the backward product ``Wᵀ dy`` has the same blocked structure).

The layout and kernels are in :mod:`sparta.kernels.nm`. Memory per connection: the value (4 bytes in float32)
plus a one-byte in-block position, plus one more byte for a transposable layer's transposed positions.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import torch
from torch import nn

from sparta.kernels import fused
from sparta.kernels import nm as knm
from sparta.kernels import nm_vec as kvec
from sparta.kernels.threads import POOL, get_num_threads
from sparta.nn.functional import MIN_WORK_PER_THREAD, check_input, feature_major, rows_view
from sparta.nn.init import INITS, bias_bound
from sparta.nn.linear import set_param_data

PATTERNS = ("2:4", "4:8", "1:4", "2:8", "1:16", "2:32", "1:32", "4:64")  # the literature's and the sparse regime's
VECTORS = (1, kvec.V)  # rows per group sharing their positions (1: plain N:M)
_PATTERN = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_pattern(pattern: str | tuple[int, int]) -> tuple[int, int]:
    """``"N:M"`` (or ``(N, M)``) → ``(N, M)``, checked: ``1 ≤ N < M ≤ 256``. ``ValueError`` otherwise."""
    if isinstance(pattern, tuple) and len(pattern) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                for v in pattern):
        n, m = pattern
    else:
        match = _PATTERN.match(pattern) if isinstance(pattern, str) else None
        if match is None:
            raise ValueError(f"N:M pattern must look like '2:4' (N and M integers), got {pattern!r}")
        n, m = int(match.group(1)), int(match.group(2))
    if not 1 <= n < m or m > knm.MAX_M:
        raise ValueError(f"N:M pattern must have 1 ≤ N < M ≤ {knm.MAX_M}, got {n}:{m}")
    return n, m


def check_shape(in_features: int, out_features: int, n: int, m: int, transposable: bool, vector: int = 1) -> None:
    """Whether an ``in → out`` layer can hold an N:M mask: the last block of inputs (``in mod M`` wide when ``M``
    does not divide ``in``) must fit ``N`` connections; a transposable mask needs ``M`` to divide both sizes; a
    vector-wise one (``vector`` rows per group sharing their positions) needs ``vector`` to divide ``out`` and is
    not transposable. ``ValueError`` naming the sizes otherwise."""
    for name, v in (("in_features", in_features), ("out_features", out_features)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    last = in_features - (math.ceil(in_features / m) - 1) * m
    if last < n:
        raise ValueError(f"an {n}:{m} layer needs at least {n} inputs in its last block of {m}: in_features = "
                         f"{in_features} leaves {last}")
    if transposable and (in_features % m or out_features % m):
        raise ValueError(f"a transposable {n}:{m} layer needs in_features and out_features divisible by {m}, "
                         f"got {in_features} → {out_features}")
    if isinstance(vector, bool) or vector not in VECTORS:
        raise ValueError(f"vector must be one of {VECTORS} (output rows per group sharing their N:M positions), "
                         f"got {vector!r}")
    if vector > 1 and transposable:
        raise ValueError(f"a layer is either transposable or vector-wise (vector={vector}), not both")
    if out_features % vector:
        raise ValueError(f"a vector-wise layer (vector={vector}) needs out_features divisible by {vector}, "
                         f"got {out_features}")


def blocks(in_features: int, m: int) -> int:
    """Blocks of ``m`` inputs per row, ``ceil(in / m)``."""
    return -(-in_features // m)


def mask_to_pos(mask: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Bool ``(out, in)`` mask with exactly ``n`` per block of ``m`` inputs → uint8 positions ``(out · G · n,)``
    (ascending within each block). ``ValueError`` if a block holds another count."""
    out_f, in_f = mask.shape
    g = blocks(in_f, m)
    padded = torch.zeros(out_f, g * m, dtype=torch.bool)
    padded[:, :in_f] = mask.cpu().bool()
    padded = padded.reshape(out_f, g, m)
    counts = padded.sum(-1)
    if bool((counts != n).any()):
        o, b = (int(v) for v in torch.nonzero(counts != n)[0])
        raise ValueError(f"the mask is not {n}:{m}: row {o}, block {b} holds {int(counts[o, b])} connections")
    return torch.nonzero(padded.reshape(-1, m))[:, 1].to(torch.uint8)


def check_vector(pos: torch.Tensor, vector: int, out_features: int) -> None:
    """``ValueError`` unless every group of ``vector`` consecutive rows of the positions ``pos (out · G · n,)``
    holds the same positions (a vector-wise layer's kernels read a group's first row only)."""
    if vector <= 1:
        return
    p = pos.reshape(out_features // vector, vector, -1)
    differ = (p != p[:, :1]).any(-1).any(-1)
    if bool(differ.any()):
        h = int(torch.nonzero(differ)[0])
        raise ValueError(f"the mask is not vector-wise: rows {h * vector}–{h * vector + vector - 1} do not share their "
                         "N:M positions")


def transposed_pos(pos: torch.Tensor, n: int, m: int, out_features: int, in_features: int) -> torch.Tensor:
    """The transposed blocks of a transposable layout: uint8 ``(in · H · n,)``, ``H = out / m``, the offset of each
    connection's row inside its block of ``m`` rows, rows ascending per input. ``ValueError`` if a column block
    does not hold exactly ``n``."""
    g = blocks(in_features, m)
    per_row = g * n
    j = torch.arange(pos.numel())
    rows = j // per_row
    cols = (j % per_row) // n * m + pos.long()
    tkeys = torch.sort(cols * out_features + rows).values
    counts = torch.bincount(tkeys // m, minlength=in_features * (out_features // m))
    if bool((counts != n).any()):
        k = int(torch.nonzero(counts != n)[0])
        raise ValueError(f"the mask is not transposable {n}:{m}: input {k // (out_features // m)}, block of rows "
                         f"{k % (out_features // m)} holds {int(counts[k])} connections")
    return (tkeys % out_features % m).to(torch.uint8)


def random_mask(out_features: int, in_features: int, n: int, m: int, transposable: bool = False,
                generator: torch.Generator | None = None, vector: int = 1) -> torch.Tensor:
    """A uniformly random N:M mask, bool ``(out, in)`` (transposable: the greedy transposable mask of random
    scores, :func:`sparta.kernels.nm.greedy_transposable`; ``vector > 1``: one random pattern per group of
    ``vector`` rows)."""
    check_shape(in_features, out_features, n, m, transposable, vector)
    scores = torch.rand(out_features // vector, in_features, generator=generator, dtype=torch.float64)
    return magnitude_mask(scores, n, m, transposable).repeat_interleave(vector, 0)


def magnitude_mask(scores: torch.Tensor, n: int, m: int, transposable: bool = False, vector: int = 1) -> torch.Tensor:
    """The N:M mask keeping the largest ``scores (out, in)`` (e.g. ``|W|``): the top ``n`` of every block (exact),
    or for a transposable mask the greedy 2-approximation (:func:`sparta.kernels.nm.greedy_transposable`); with
    ``vector > 1``, the top ``n`` of every block of each group of ``vector`` rows by the group's summed scores
    (exact), shared by the group's rows. Returns bool ``(out, in)``."""
    out_f, in_f = scores.shape
    check_shape(in_f, out_f, n, m, transposable, vector)
    s = scores.detach().to(torch.float64).cpu().contiguous()
    if vector > 1:
        group = magnitude_mask(s.reshape(out_f // vector, vector, in_f).sum(1), n, m)
        return group.repeat_interleave(vector, 0)
    if transposable:
        mask = np.empty(out_f * in_f, np.uint8)
        knm.greedy_transposable(s.reshape(-1).numpy(), n, m, out_f, in_f, mask)
        return torch.from_numpy(mask).reshape(out_f, in_f).bool()
    g = blocks(in_f, m)
    padded = torch.full((out_f, g * m), -math.inf, dtype=torch.float64)
    padded[:, :in_f] = s
    top = torch.topk(padded.reshape(out_f, g, m), n, dim=-1).indices
    mask = torch.zeros(out_f, g, m, dtype=torch.bool)
    mask.scatter_(-1, top, True)
    return mask.reshape(out_f, g * m)[:, :in_f].contiguous()


class NMLinearFunction(torch.autograd.Function):
    """Autograd for ``yᵀ = W xᵀ + b`` with ``W`` in the N:M layout: takes ``x (B, in)``, returns ``yᵀ (out, ld)``
    (a feature-major buffer; the caller slices ``[:, :B]``); gradients flow to ``x``, ``values`` and ``bias``."""

    @staticmethod
    def forward(ctx, x2d, values, bias, pos, tpos, n, m, n_in, capture, vector=1):  # type: ignore[override]
        """``y (batch, out) = x2d (batch, in) · Wᵀ + bias`` by the N:M forward kernel (the vector-wise one,
        :mod:`sparta.kernels.nm_vec`, where groups of ``vector`` rows share their positions); saves what backward
        needs."""
        n_out = pos.numel() // (blocks(n_in, m) * n)
        batch = x2d.shape[0]
        xf, ld_x = feature_major(x2d)
        ld = fused.leading_dim(batch)
        if ld_x != ld:
            out = fused.aligned_empty(n_in * ld, xf.dtype)
            out.reshape(n_in, ld)[:, :batch] = np.lib.stride_tricks.as_strided(
                xf, (n_in, batch), (ld_x * xf.itemsize, xf.itemsize))
            xf = out
        y = torch.empty(n_out, ld, dtype=x2d.dtype)
        yf = y.numpy().reshape(-1)
        v = values.detach().numpy()
        b = bias.detach().numpy() if bias is not None else np.zeros(n_out, xf.dtype)
        p = pos.numpy()
        parts = fused.groups(batch, get_num_threads())
        threads = fused.threads_for(len(parts), values.numel() * batch, get_num_threads(), MIN_WORK_PER_THREAD)
        fwd = kvec.forward if vector > 1 else knm.forward
        POOL.run([lambda c0=c0, c1=c1: fwd(p, v, b, n, m, xf, ld, c0, c1, yf) for c0, c1 in parts],
                 threads, key=(id(values), "nm-forward", batch))
        ctx.xf, ctx.ld, ctx.parts, ctx.threads = xf, ld, parts, threads
        ctx.n, ctx.m, ctx.n_in, ctx.batch, ctx.has_bias = n, m, n_in, batch, bias is not None
        ctx.capture, ctx.vector = capture, vector
        ctx.save_for_backward(values, pos, tpos, x2d)
        return y

    @staticmethod
    def backward(ctx, dyt):  # type: ignore[override]
        """Input, value and bias gradients from the output gradient, through the N:M backward kernels."""
        values, pos, tpos, _ = ctx.saved_tensors
        ld, parts, xf, batch, n, m, n_in = ctx.ld, ctx.parts, ctx.xf, ctx.batch, ctx.n, ctx.m, ctx.n_in
        n_out = dyt.shape[0]
        dtype = xf.dtype
        if dyt.stride() == (ld, 1) and dyt.dtype == values.dtype and dyt.shape[1] == ld:
            dz = dyt.detach().reshape(-1).numpy()
        else:
            dz = fused.aligned_empty(n_out * ld, dtype)
            dz[:] = 0
            rows_view(dz, n_out, ld, batch).copy_(dyt[:, :batch])
        want_dx, want_dv = bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1])
        dvalues = dx = dbias = None
        partials = [np.empty(values.numel(), dtype) for _ in parts] if want_dv else [np.empty(0, dtype)] * len(parts)
        dxf = fused.aligned_empty(n_in * ld, dtype) if want_dx else np.empty(0, dtype)
        v, p, tp = values.detach().numpy(), pos.numpy(), tpos.numpy()
        if tpos.numel():  # both gradients in one pass over the transposed blocks (dz rows read once)
            tasks = [lambda q=q, c0=c0, c1=c1: knm.backward_transposed(tp, p, v, n, m, n_in, n_out, dz, xf, ld, c0, c1,
                                                                       dxf, partials[q], want_dx, want_dv)
                     for q, (c0, c1) in enumerate(parts)]
        else:
            bwd = kvec.backward if ctx.vector > 1 else knm.backward_scatter
            tasks = [lambda q=q, c0=c0, c1=c1: bwd(p, v, n, m, n_in, n_out, dz, xf, ld, c0, c1, dxf, partials[q], want_dx,
                                                   want_dv)
                     for q, (c0, c1) in enumerate(parts)]
        POOL.run(tasks, ctx.threads, key=(id(values), "nm-backward", want_dx, want_dv, batch))
        if want_dv:
            for part in partials[1:]:
                np.add(partials[0], part, out=partials[0])
            dvalues = torch.from_numpy(partials[0])
        if want_dx:
            dx = rows_view(dxf, n_in, ld, batch).t()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            dbias = rows_view(dz, n_out, ld, batch).sum(1)
        if ctx.capture is not None:  # for gradient-based growth (RigL): dL/dW = dyt @ xtᵀ, formed by blocks of rows
            ctx.capture["xt"] = rows_view(xf, n_in, ld, batch)
            ctx.capture["dyt"] = rows_view(dz, n_out, ld, batch)
        return dx, dvalues, dbias, None, None, None, None, None, None, None


def nm_linear(x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None, pos: torch.Tensor,
              tpos: torch.Tensor, n: int, m: int, in_features: int, capture: dict | None = None,
              vector: int = 1) -> torch.Tensor:
    """``y = x Wᵀ + b`` for ``W`` in the N:M layout (``values``, ``pos``; ``tpos`` the transposed blocks of a
    transposable layer or an empty tensor; ``vector = 4``: groups of 4 rows share their positions, and the
    vector-wise kernels run). ``x (..., in)`` float32/float64 on the CPU → ``(..., out)``.
    ``capture``: if a dict, backward stores the feature-major ``xt (in, B)`` and ``dyt (out, B)`` in it."""
    check_input(x, values, in_features)
    if not x.is_cpu or not values.is_cpu:
        raise NotImplementedError("NMLinear has CPU kernels only")
    if vector not in VECTORS or (vector > 1 and (pos.numel() // (blocks(in_features, m) * n)) % vector):
        raise ValueError(f"vector={vector!r}: must be one of {VECTORS} and divide the layer's output rows")
    lead = x.shape[:-1]
    x2d = x.reshape(-1, in_features)
    yt = NMLinearFunction.apply(x2d, values, bias, pos, tpos, n, m, in_features, capture, vector)
    y = yt[:, :x2d.shape[0]].t()
    return y if x.dim() == 2 else y.reshape(*lead, yt.shape[0])


class NMLinear(nn.Module):
    """Linear layer ``y = x Wᵀ + b`` with an N:M sparse ``W (out × in)``: in every block of ``m`` consecutive
    inputs of every row exactly ``n`` connections (the last block may be narrower when ``m`` does not divide
    ``in``). With ``transposable=True`` the mask is N:M along the columns too (per ``m × m`` block, ``n`` per
    row and per column; ``m`` must divide both sizes) and input gradients gather over the transposed blocks. With
    ``vector=4`` the output rows come in groups of 4 consecutive rows that share their positions (each row its own
    values; ``out`` divisible by 4, not transposable): the same layout and memory, kernels that read each input row
    once for the group's four rows (:mod:`sparta.kernels.nm_vec`; the V:N:M structure of VENOM, Castro et al. 2023).

    State: ``values`` — ``nn.Parameter (out · G · n,)`` (``G = ceil(in / m)``), in row-major order; ``bias``
    ``(out,)`` or None; buffers ``pos`` (uint8, the in-block position of each connection) and ``tpos`` (uint8
    ``(in · out / m · n,)``, the transposed blocks; empty unless transposable).

    Args:
        in_features: input size, as for ``nn.Linear``.
        out_features: output size, as for ``nn.Linear``.
        n: kept connections per block (``1 ≤ n < m``); or give ``pattern="n:m"``.
        m: block length (``m ≤ 256``).
        transposable: keep the mask N:M along the columns too.
        vector: 1 (plain N:M) or 4 (groups of 4 output rows share their positions; see above).
        bias: learn an additive bias.
        init: ``"uniform"`` (U(±1/√fan_in) with the fan-in ``G · n``) or another of ``sparta.nn.init.INITS``
            that only depends on the fan-in and fan-out.
        generator: torch generator for the random mask and values.

    Input ``(..., in_features)`` → output ``(..., out_features)``; CPU only.
    """

    pos: torch.Tensor
    tpos: torch.Tensor

    def __init__(self, in_features: int, out_features: int, n: int | None = None, m: int | None = None, *,
                 pattern: str | None = None, transposable: bool = False, bias: bool = True, init: str = "uniform",
                 dtype: torch.dtype | None = None, generator: torch.Generator | None = None, vector: int = 1) -> None:
        super().__init__()
        if pattern is not None:
            if n is not None or m is not None:
                raise ValueError("give the pattern either as n, m or as pattern='n:m', not both")
            n, m = parse_pattern(pattern)
        elif n is None or m is None:
            raise ValueError("give the pattern as n, m or pattern='n:m'")
        else:
            n, m = parse_pattern((n, m))
        check_shape(in_features, out_features, n, m, transposable, vector)
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        dtype = dtype or torch.get_default_dtype()
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.in_features, self.out_features, self.n, self.m = in_features, out_features, n, m
        self.transposable = bool(transposable)
        self.vector = int(vector)
        self.init = init
        self.capture: dict | None = None  # set to a dict to keep the last backward's inputs (RigL's grow score)
        mask = random_mask(out_features, in_features, n, m, transposable, generator, vector)
        self.register_buffer("pos", mask_to_pos(mask, n, m))
        self.register_buffer("tpos", self._tpos(self.pos))
        self.values = nn.Parameter(torch.empty(self.pos.numel(), dtype=dtype))
        self.register_parameter("bias", nn.Parameter(torch.empty(out_features, dtype=dtype)) if bias else None)
        self.reset_parameters(generator)

    # ------------------------------------------------------------------ basics
    @property
    def pattern(self) -> str:
        """``"n:m"``."""
        return f"{self.n}:{self.m}"

    @property
    def blocks(self) -> int:
        """Blocks per row, ``G = ceil(in / m)``."""
        return blocks(self.in_features, self.m)

    @property
    def nnz(self) -> int:
        """Number of connections, ``out · G · n``."""
        return self.pos.numel()

    @property
    def density(self) -> float:
        """``nnz / (in · out)`` (``n / m`` when ``m`` divides ``in``)."""
        return self.nnz / (self.in_features * self.out_features)

    def fan_in(self) -> torch.Tensor:
        """Connections into each output neuron, int64 ``(out,)`` (all ``G · n``)."""
        return torch.full((self.out_features,), self.blocks * self.n, dtype=torch.int64)

    def rows(self) -> torch.Tensor:
        """Row of every connection, int64 ``(nnz,)``."""
        return torch.arange(self.nnz) // (self.blocks * self.n)

    def cols(self) -> torch.Tensor:
        """Column of every connection, int64 ``(nnz,)``."""
        j = torch.arange(self.nnz)
        return (j % (self.blocks * self.n)) // self.n * self.m + self.pos.long()

    def keys(self) -> torch.Tensor:
        """Flat key ``row · in + col`` of every connection, int64 ``(nnz,)``, ascending."""
        return self.rows() * self.in_features + self.cols()

    def _tpos(self, pos: torch.Tensor) -> torch.Tensor:
        if not self.transposable:
            return torch.empty(0, dtype=torch.uint8)
        return transposed_pos(pos, self.n, self.m, self.out_features, self.in_features)

    def bytes_per_connection(self) -> float:
        """Bytes the layer's weight structure holds per connection: value, position and transposed position."""
        return (self.values.numel() * self.values.element_size() + self.pos.numel() + self.tpos.numel()) / self.nnz

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-draw values and bias U(±1/√fan_in) (``init="uniform"``) on the current mask; other schemes
        through :func:`sparta.nn.init.init_values` on the equivalent CSR."""
        fan = self.blocks * self.n
        if self.init == "uniform":
            u = torch.rand(self.nnz, generator=generator, dtype=torch.float64) * 2 - 1
            self.values.copy_(u * bias_bound(torch.tensor(float(fan))))
        else:
            from sparta.nn.init import init_values
            indptr = torch.arange(self.out_features + 1, dtype=torch.int64) * fan
            self.values.copy_(init_values(indptr, self.cols().to(torch.int32), self.in_features, self.init,
                                          self.values.dtype, generator))
        if self.bias is not None:
            u = torch.rand(self.out_features, generator=generator, dtype=torch.float64) * 2 - 1
            self.bias.copy_(u * bias_bound(torch.tensor(float(fan))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in) → (..., out)``: ``x · Wᵀ + bias`` with the N:M weights."""
        return nm_linear(x, self.values, self.bias, self.pos, self.tpos, self.n, self.m, self.in_features, self.capture,
                         self.vector)

    def extra_repr(self) -> str:
        """Sizes, pattern and whether the mask is transposable, for ``repr``."""
        return (f"in_features={self.in_features}, out_features={self.out_features}, pattern={self.pattern}"
                f"{' transposable' if self.transposable else ''}"
                f"{f', vector={self.vector}' if self.vector > 1 else ''}, nnz={self.nnz}, density={self.density:.4g}, "
                f"bias={self.bias is not None}")

    # ------------------------------------------------------------- conversions
    @torch.no_grad()
    def to_dense(self) -> torch.Tensor:
        """The weight as a dense ``(out, in)`` tensor (for inspection and tests)."""
        w = torch.zeros(self.out_features, self.in_features, dtype=self.values.dtype)
        w[self.rows(), self.cols()] = self.values.detach()
        return w

    def mask(self) -> torch.Tensor:
        """Boolean ``(out, in)`` connectivity."""
        mk = torch.zeros(self.out_features, self.in_features, dtype=torch.bool)
        mk[self.rows(), self.cols()] = True
        return mk

    def check(self) -> None:
        """Raise ``ValueError`` unless the stored layout is a valid N:M mask (and transposable N:M when the layer
        is): positions ascending and inside their blocks, and the transposed blocks match."""
        m, n = self.m, self.n
        pos = self.pos.long().reshape(self.out_features, self.blocks, n)
        width = torch.full((self.blocks,), m, dtype=torch.int64)
        width[-1] = self.in_features - (self.blocks - 1) * m
        if bool((pos >= width[None, :, None]).any()):
            raise ValueError("a position lies outside its block")
        if n > 1 and bool((pos[..., 1:] <= pos[..., :-1]).any()):
            raise ValueError("positions are not strictly ascending within a block")
        if self.transposable and not torch.equal(self.tpos, self._tpos(self.pos)):
            raise ValueError("the transposed blocks do not match the mask")
        check_vector(self.pos, self.vector, self.out_features)

    @classmethod
    @torch.no_grad()
    def from_dense(cls, weight: torch.Tensor | nn.Module, n: int, m: int, *, transposable: bool = False,
                   bias: torch.Tensor | None = None, mask: torch.Tensor | None = None, vector: int = 1) -> NMLinear:
        """An ``NMLinear`` holding the weights of ``weight`` (a ``(out, in)`` tensor, an ``nn.Linear``, a
        ``SparseLinear`` or anything with ``to_dense()``) at the N:M mask of largest magnitude
        (:func:`magnitude_mask`; transposable: the greedy 2-approximation; ``vector = 4``: by the summed
        magnitude of each group of 4 rows), or at ``mask`` if given; the bias is copied from the module (or
        ``bias``)."""
        if isinstance(weight, nn.Module):
            if bias is None and getattr(weight, "bias", None) is not None:
                bias = weight.bias
            weight = weight.weight if isinstance(weight, nn.Linear) else weight.to_dense()  # type: ignore[operator]
        w = torch.as_tensor(weight).detach().cpu()
        if w.dim() != 2:
            raise ValueError(f"weight must be 2-D (out, in), got shape {tuple(w.shape)}")
        n, m = parse_pattern((n, m))
        out_f, in_f = w.shape
        if mask is None:
            mask = magnitude_mask(w.abs(), n, m, transposable, vector)
        layer = cls(in_f, out_f, n, m, transposable=transposable, bias=bias is not None, dtype=w.dtype, vector=vector)
        layer.set_mask(mask.bool(), w[mask.bool()])
        if bias is not None:
            layer.bias.copy_(bias.detach())  # type: ignore[union-attr]
        return layer

    @torch.no_grad()
    def set_mask(self, mask: torch.Tensor, values: torch.Tensor) -> None:
        """Replace the mask (bool ``(out, in)``, N:M, transposable or shared by each group of ``vector`` rows if
        the layer is) and the values (``(nnz,)``, in row-major order of the mask's positions). ``ValueError`` if the
        mask breaks the pattern."""
        if tuple(mask.shape) != (self.out_features, self.in_features):
            raise ValueError(f"mask must have shape {(self.out_features, self.in_features)}, got {tuple(mask.shape)}")
        pos = mask_to_pos(mask, self.n, self.m)
        check_vector(pos, self.vector, self.out_features)
        tpos = self._tpos(pos)
        self.pos, self.tpos = pos, tpos
        set_param_data(self.values, values.to(self.values.dtype).reshape(-1).clone())

    # ---------------------------------------------------------- state dicts
    def get_extra_state(self) -> dict:
        """Sizes and pattern, saved in the state dict so that loading checks them."""
        return {"in_features": self.in_features, "out_features": self.out_features, "n": self.n, "m": self.m,
                "transposable": self.transposable, "vector": self.vector}

    def set_extra_state(self, state: Any) -> None:
        """Refuse (``ValueError``) a state dict saved from a layer of other sizes or pattern (one saved before
        vector-wise layers existed counts as ``vector=1``)."""
        mine = self.get_extra_state()
        if isinstance(state, dict) and "vector" not in state:
            state = {**state, "vector": 1}
        if not isinstance(state, dict) or any(state.get(k) != v for k, v in mine.items()):
            raise ValueError(f"state_dict is for an NMLinear {state!r}, this layer is {mine}")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):  # type: ignore[override]
        key = prefix + "_extra_state"
        if key in state_dict:  # refused before torch copies a tensor: a mismatch leaves the layer as it was
            self.set_extra_state(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
