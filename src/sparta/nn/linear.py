"""``SparseLinear``: a drop-in ``nn.Linear`` whose weight is a CSR structure, never a dense matrix."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from sparta.kernels import fused
from sparta.nn import structure
from sparta.nn.functional import BACKENDS, INFER_BATCH, TRANSPOSES, sparse_linear
from sparta.nn.init import (
    INITS,
    bias_bound,
    check_density,
    density_of,
    er_density,
    init_values,
    nnz_for,
    random_topology,
)


def set_param_data(param: nn.Parameter, data: torch.Tensor) -> None:
    """Give ``param`` new data of any shape, keeping the Parameter object (optimizers refer to it).

    PyTorch keeps a cached gradient accumulator per leaf that remembers the old shape while any old
    graph (say, last step's loss) is alive, and resets it only on a dtype or device change; passing
    through a different dtype forces that reset, so the next backward accepts the new shape.
    """
    if data.shape != param.shape:
        other = torch.float16 if param.dtype != torch.float16 else torch.float32
        param.data = torch.empty(0, dtype=other, device=param.device)
    param.data = data
    param.grad = None


def _check_features(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    if value > structure.MAX_FEATURES:
        raise ValueError(f"{name} must be < 2**31 (int32 indices), got {value}")
    return value


class SparseLinear(nn.Module):
    """Linear layer ``y = x Wᵀ + b`` with ``W (out × in)`` stored as CSR.

    State: ``values`` — ``nn.Parameter (nnz,)``, one weight per connection; ``bias`` — ``(out,)`` or
    None; buffers ``indptr`` (int64, ``out + 1``) and ``indices`` (int32, ``nnz``, sorted column of each
    connection within its row). Memory and time are ``O(nnz)``, not ``O(in · out)``.

    Args:
        in_features: size of each input sample, as for ``nn.Linear``.
        out_features: size of each output sample, as for ``nn.Linear``.
        density: fraction of connections in ``(0, 1]``. Exactly one of ``density``/``epsilon``.
        epsilon: Erdős–Rényi parameter; density ``ε (in + out) / (in · out)`` (SET uses ε = 20).
        bias: learn an additive bias.
        init: value initialisation, one of ``sparta.nn.init.INITS`` (default: ``nn.Linear``'s
            U(±1/√fan_in), with the neuron's actual fan-in).
        backend: ``"auto"`` (numba kernels on CPU, torch gather/scatter ops elsewhere), ``"numba"``,
            or ``"torch"``.
        transpose: how the numba backend forms input gradients ``Wᵀ dy``: ``"csc"`` gathers over a
            transposed copy of the structure (built on first use after each topology change; 8 bytes per
            connection: the row of each connection and its CSR position) — faster; ``"scatter"`` scatters
            over the CSR itself and keeps nothing extra.
        generator: torch generator for the topology and values (default: torch's global RNG).

    Input ``(..., in_features)`` → output ``(..., out_features)``, like ``nn.Linear``.
    """

    indptr: torch.Tensor
    indices: torch.Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        density: float | None = None,
        *,
        epsilon: float | None = None,
        bias: bool = True,
        init: str = "uniform",
        backend: str = "auto",
        transpose: str = "csc",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.in_features = _check_features("in_features", in_features)
        self.out_features = _check_features("out_features", out_features)
        if (density is None) == (epsilon is None):
            raise ValueError("give exactly one of density (in (0, 1]) or epsilon (Erdős–Rényi), "
                             f"got density={density!r}, epsilon={epsilon!r}")
        if density is None:
            density = er_density(in_features, out_features, float(epsilon))  # type: ignore[arg-type]
        density = check_density(density)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if transpose not in TRANSPOSES:
            raise ValueError(f"transpose must be one of {TRANSPOSES}, got {transpose!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        dtype = dtype or torch.get_default_dtype()
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.backend = backend
        self.transpose = transpose
        self._transposed: tuple | None = None
        self._infer_arrays: tuple | None = None  # (key, numpy views) for the small-batch path, see _infer
        self.init = init
        self.capture: dict | None = None  # set to a dict to keep the last backward's inputs (RigL)
        indptr, indices = random_topology(out_features, in_features, nnz_for(density, in_features, out_features),
                                          generator)
        self.register_buffer("indptr", indptr.to(device))
        self.register_buffer("indices", indices.to(device))
        self.values = nn.Parameter(torch.empty(indices.numel(), dtype=dtype, device=device))
        # registered even when absent (as nn.Linear does), so the fused paths find it in _parameters
        self.register_parameter("bias", nn.Parameter(torch.empty(out_features, dtype=dtype, device=device))
                                if bias else None)
        self.reset_parameters(generator)

    # ------------------------------------------------------------------ basics
    @property
    def nnz(self) -> int:
        """Number of connections."""
        return self.indices.numel()

    @property
    def density(self) -> float:
        """``nnz / (in · out)``."""
        return density_of(self.nnz, self.in_features, self.out_features)

    def fan_in(self) -> torch.Tensor:
        """Connections into each output neuron, int64 ``(out,)``."""
        return self.indptr[1:] - self.indptr[:-1]

    def rows(self) -> torch.Tensor:
        """Output neuron (row) of every connection, int64 ``(nnz,)``."""
        return structure.rows_of(self.indptr, self.nnz)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-draw values (scheme ``self.init``) and bias (U(±1/√fan_in)) on the current topology."""
        vals = init_values(self.indptr.cpu(), self.indices.cpu(), self.in_features, self.init,
                           self.values.dtype, generator)
        self.values.copy_(vals)
        if self.bias is not None:
            bound = bias_bound(self.fan_in().cpu())
            u = torch.rand(self.out_features, generator=generator, dtype=torch.float64) * 2 - 1
            self.bias.copy_(u * bound)

    def transposed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The CSC copy of the structure used for input gradients: ``colptr`` uint64 ``(in+1,)``, ``rowidx``
        and ``perm`` (CSR position of each connection) uint32 ``(nnz,)``, rows ascending per column.

        Built on first use and again after any change to ``indptr``/``indices`` (new tensors or in-place
        writes); it holds positions, not values, so optimizer steps never invalidate it. CPU only.
        """
        key = (self.indptr, self.indices, self.indptr._version, self.indices._version, self.in_features)
        t = self._transposed
        if t is None or t[0][0] is not key[0] or t[0][1] is not key[1] or t[0][2:] != key[2:]:
            ip = self.indptr.numpy().view(np.uint64)
            ix = self.indices.numpy().view(np.uint32)
            t = self._transposed = (key, fused.csc(ip, ix, self.in_features))
        return t[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (..., in_features)`` → ``(..., out_features)``: ``x Wᵀ + b`` over the stored connections only."""
        v, b = self._parameters["values"], self._parameters["bias"]
        if (isinstance(x, torch.Tensor) and x.dim() == 2 and 0 < x.shape[0] <= INFER_BATCH and x.dtype == v.dtype
                and x.shape[1] == self.in_features and self.capture is None and self.backend != "torch"
                and x.is_cpu and v.is_cpu and not (torch.is_grad_enabled() and (
                    x.requires_grad or v.requires_grad or (b is not None and b.requires_grad)))):
            return self._infer(x, v, b)
        return sparse_linear(x, self.indptr, self.indices, v, b, self.in_features, self.backend,
                             self.capture, self.transposed if self.transpose == "csc" else None)

    def release_arrays(self) -> None:
        """Forget the cached numpy views of the small-batch path, so that arrays a topology edit replaces are
        freed at once (topology algorithms call it before editing)."""
        self._infer_arrays = None

    def _infer(self, x: torch.Tensor, v: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        """``x (B, in)`` → ``(B, out)`` for a few samples without autograd (an agent acting), one sample at a
        time (:func:`sparta.kernels.fused.infer_layer`; equal to the tiled path bit for bit). The numpy views
        of the layer's arrays are cached while the tensors keep their storage: ``.numpy()`` costs microseconds
        per tensor, a large share of such a call."""
        ip, ix = self._buffers["indptr"], self._buffers["indices"]
        key = (ip.data_ptr(), ip._version, ix.data_ptr(), ix._version, ix.numel(), v.data_ptr(), v.numel(),
               b.data_ptr() if b is not None else 0)
        c = self.__dict__.get("_infer_arrays")
        if c is None or c[0] != key:
            vn = v.detach().numpy()
            bn = b.detach().numpy() if b is not None else np.zeros(self.out_features, vn.dtype)
            c = self._infer_arrays = (key, (ip.numpy().view(np.uint64), ix.numpy().view(np.uint32), vn, bn))
        xn = x.detach().numpy() if x.is_contiguous() else x.detach().contiguous().numpy()
        out = np.empty((xn.shape[0], self.out_features), xn.dtype)
        fused.infer_layer(*c[1], xn, out)
        return torch.from_numpy(out)

    def extra_repr(self) -> str:
        """Sizes, connection count, density and bias, for ``repr``."""
        return (f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.nnz}, "
                f"density={self.density:.4g}, bias={self.bias is not None}"
                + ("" if self.transpose == "csc" else f", transpose={self.transpose!r}"))

    # ------------------------------------------------------------- conversions
    @torch.no_grad()
    def to_dense(self) -> torch.Tensor:
        """The weight as a dense ``(out, in)`` tensor (for inspection and tests; ``O(in · out)`` memory)."""
        w = torch.zeros(self.out_features, self.in_features, dtype=self.values.dtype, device=self.values.device)
        w[self.rows(), self.indices.long()] = self.values
        return w

    def mask(self) -> torch.Tensor:
        """Boolean ``(out, in)`` connectivity (dense; for inspection and tests)."""
        m = torch.zeros(self.out_features, self.in_features, dtype=torch.bool, device=self.indices.device)
        m[self.rows(), self.indices.long()] = True
        return m

    @classmethod
    @torch.no_grad()
    def from_dense(
        cls,
        linear: nn.Linear,
        mask: torch.Tensor | None = None,
        density: float | None = None,
        backend: str = "auto",
    ) -> SparseLinear:
        """A ``SparseLinear`` holding ``linear``'s weights at the positions of ``mask`` (bool ``(out, in)``),
        or at its ``density · in · out`` largest-magnitude weights; its bias is copied."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        w = linear.weight.detach()
        out_f, in_f = w.shape
        if (mask is None) == (density is None):
            raise ValueError("give exactly one of mask or density")
        if mask is None:
            k = nnz_for(check_density(density), in_f, out_f)  # type: ignore[arg-type]
            flat = torch.topk(w.abs().reshape(-1), k, sorted=False).indices
            mask = torch.zeros(out_f * in_f, dtype=torch.bool, device=w.device)
            mask[flat] = True
            mask = mask.reshape(out_f, in_f)
        mask = torch.as_tensor(mask, device=w.device)
        if mask.shape != w.shape:
            raise ValueError(f"mask must have shape {tuple(w.shape)}, got {tuple(mask.shape)}")
        mask = mask.bool()
        if not bool(mask.any()):
            raise ValueError("mask must keep at least one connection")
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.in_features, layer.out_features = in_f, out_f
        layer.backend, layer.init, layer.capture = backend, "uniform", None
        layer.transpose, layer._transposed, layer._infer_arrays = "csc", None, None
        rows, cols = torch.nonzero(mask, as_tuple=True)
        indptr, indices, _ = structure.from_coo(rows, cols, out_f, in_f)
        layer.register_buffer("indptr", indptr)
        layer.register_buffer("indices", indices)
        layer.values = nn.Parameter(w[mask].clone())  # row-major order == CSR order
        layer.register_parameter("bias", None if linear.bias is None else nn.Parameter(linear.bias.detach().clone()))
        return layer

    # ------------------------------------------------------ topology changes
    def _set_topology(self, indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor) -> None:
        self.indptr = indptr
        self.indices = indices
        set_param_data(self.values, values)

    @torch.no_grad()
    def rewire(self, keep: torch.Tensor | None, rows: torch.Tensor, cols: torch.Tensor,
               values: torch.Tensor | float | None = None) -> torch.Tensor:
        """Keep the connections where bool ``keep (nnz,)`` is True (all when None) and add ``(rows[i], cols[i])``
        with weights ``values[i]`` (default 0), in one ``O(nnz log nnz)`` pass.

        Raises ``ValueError`` for out-of-range, repeated or already present new positions. Returns the source
        map (int64 ``(new_nnz,)``): old position of each connection, ``-1 - i`` for new one ``i``; carry
        optimizer state across with :func:`sparta.nn.structure.remap`.
        """
        rows = torch.as_tensor(rows, device=self.indices.device).reshape(-1)
        cols = torch.as_tensor(cols, device=self.indices.device).reshape(-1)
        if isinstance(values, torch.Tensor) and values.numel() != rows.numel():
            raise ValueError(f"values must have {rows.numel()} entries (one per new connection), got {values.numel()}")
        indptr, indices, source = structure.rewire(self.indptr, self.indices, keep, rows, cols, self.in_features)
        self._set_topology(indptr, indices, structure.remap(self.values.data, source, 0.0 if values is None else values))
        return source

    def remove_connections(self, which: torch.Tensor) -> torch.Tensor:
        """Remove connections: ``which`` is a bool ``(nnz,)`` mask (True = remove) or int positions.

        Returns the old positions of the surviving connections, in their new order (int64
        ``(new_nnz,)``), for :func:`sparta.nn.structure.remap` of optimizer state.
        """
        which = torch.as_tensor(which, device=self.indices.device)
        if which.dtype == torch.bool:
            if which.shape != (self.nnz,):
                raise ValueError(f"which must be a bool mask of shape ({self.nnz},), got {tuple(which.shape)}")
            drop = which
        else:
            if which.dtype.is_floating_point:
                raise TypeError(f"which must be a bool mask or integer positions, got {which.dtype}")
            pos = which.long().reshape(-1)
            if pos.numel() and (int(pos.min()) < 0 or int(pos.max()) >= self.nnz):
                raise ValueError(f"positions must lie in [0, {self.nnz}), got {int(pos.min())}..{int(pos.max())}")
            drop = torch.zeros(self.nnz, dtype=torch.bool, device=self.indices.device)
            drop[pos] = True
        empty = torch.empty(0, dtype=torch.int64)
        return self.rewire(~drop, empty, empty)

    def add_connections(
        self, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor | float | None = None
    ) -> torch.Tensor:
        """Add connections at ``(rows[i], cols[i])`` with weights ``values[i]`` (default 0); see :meth:`rewire`."""
        return self.rewire(None, rows, cols, values)

    @torch.no_grad()
    def remove_neurons(self, keep_outputs: torch.Tensor | None = None,
                       keep_inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Shrink the layer: keep only the output rows where bool ``keep_outputs (out,)`` is True and the
        input columns where ``keep_inputs (in,)`` is True; ``out_features``/``in_features`` shrink, the
        remaining rows and columns are renumbered in order, the bias is sliced.

        Returns the values' source map (old position of each surviving connection).
        """
        dev = self.indices.device
        keep_out = torch.ones(self.out_features, dtype=torch.bool, device=dev) if keep_outputs is None \
            else torch.as_tensor(keep_outputs, device=dev)
        keep_in = torch.ones(self.in_features, dtype=torch.bool, device=dev) if keep_inputs is None \
            else torch.as_tensor(keep_inputs, device=dev)
        for name, k, n in (("keep_outputs", keep_out, self.out_features), ("keep_inputs", keep_in, self.in_features)):
            if k.dtype != torch.bool or k.shape != (n,):
                raise ValueError(f"{name} must be a bool tensor of shape ({n},), got {k.dtype} {tuple(k.shape)}")
            if not bool(k.any()):
                raise ValueError(f"{name} must keep at least one neuron")
        cols = self.indices.long()
        keep = keep_out[self.rows()] & keep_in[cols]
        new_rows = (torch.cumsum(keep_out.long(), 0) - 1)[self.rows()[keep]]
        new_cols = (torch.cumsum(keep_in.long(), 0) - 1)[cols[keep]]
        n_out, n_in = int(keep_out.sum()), int(keep_in.sum())
        indptr = torch.zeros(n_out + 1, dtype=torch.int64, device=dev)
        indptr[1:] = torch.cumsum(torch.bincount(new_rows, minlength=n_out), 0)
        source = torch.nonzero(keep).reshape(-1)
        self.out_features, self.in_features = n_out, n_in
        self._set_topology(indptr, new_cols.to(structure.INDEX_DTYPE), self.values.data[source])
        if self.bias is not None:
            set_param_data(self.bias, self.bias.data[keep_out])
        return source

    # ---------------------------------------------------------- state dicts
    def get_extra_state(self) -> dict:
        """The layer's shape, saved in the state dict so that loading checks it."""
        return {"in_features": self.in_features, "out_features": self.out_features}

    def set_extra_state(self, state: Any) -> None:
        """Check that a state dict was saved from a layer of this shape (``ValueError`` otherwise)."""
        shape = (state.get("in_features"), state.get("out_features")) if isinstance(state, dict) else None
        if shape != (self.in_features, self.out_features):
            raise ValueError(f"state_dict is for a SparseLinear of (in, out) = {shape}, this layer is "
                             f"({self.in_features}, {self.out_features})")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):  # type: ignore[override]
        """Accept a different connection count (topologies evolve) after checking the CSR is valid."""
        keys = [prefix + k for k in ("indptr", "indices", "values")]
        if all(k in state_dict for k in keys):
            indptr, indices, values = (state_dict[k] for k in keys)
            try:
                structure.validate(indptr.cpu(), indices.cpu(), self.out_features, self.in_features,
                                   name=f"{prefix}(SparseLinear state)")
                if values.shape != indices.shape:
                    raise ValueError(f"{prefix}values has shape {tuple(values.shape)}, expected "
                                     f"{tuple(indices.shape)} like indices")
            except ValueError as e:
                error_msgs.append(str(e))
                return
            if indices.numel() != self.nnz:
                dev = self.indices.device
                self.indptr = torch.empty_like(indptr, device=dev)
                self.indices = torch.empty_like(indices, device=dev)
                set_param_data(self.values, self.values.data.new_empty(indices.numel()))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
