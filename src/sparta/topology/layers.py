"""One view over every kind of sparse layer, so an algorithm is written once.

A layer is seen as an ``n_out × n_in`` matrix of possible connections (a conv kernel is flattened to
``out_channels × (in_channels · kh · kw)``). Connections are named by their flat *key*
``row · n_in + col``. ``SparseLinear`` is edited truly sparsely (CSR edits, O(nnz log nnz));
masked layers (``MaskedLinear``, ``MaskedConv2d``) by flipping mask entries.
"""

from __future__ import annotations

import torch
from torch import nn

from sparta.kernels import edit
from sparta.nn.linear import SparseLinear, set_param_data
from sparta.nn.masked import MaskedConv2d, MaskedLinear
from sparta.nn.nm import NMLinear, check_vector, mask_to_pos, transposed_pos
from sparta.nn.structure import keys as csr_keys
from sparta.nn.structure import remap

_GROW_BLOCK_ELEMS = 1 << 22  # dense-gradient elements formed at once when scoring absent connections


def carry_state(optimizer: torch.optim.Optimizer | None, param: nn.Parameter, source: torch.Tensor, old: int) -> None:
    """Carry per-connection optimizer state of ``param`` across a topology change.

    Every state tensor shaped ``(old,)`` (SGD momentum, Adam/AdamW moments) is remapped with
    ``source`` (see :func:`sparta.nn.structure.remap`): surviving connections keep their state, new
    ones start at zero. Scalars such as Adam's ``step`` are left alone.
    """
    if optimizer is None or param not in optimizer.state:
        return
    state = optimizer.state[param]
    for k, v in list(state.items()):
        if isinstance(v, torch.Tensor) and v.dim() == 1 and v.numel() == old:
            state[k] = remap(v, source, 0.0)


def release_caches(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """Before a topology edit: drop the numpy views that fused models (:class:`~sparta.nn.SparseMLP`) and
    sparta's optimizers cache, so each replaced array is freed when replaced, not at the next step (at scale
    the old arrays of every layer would otherwise add ~12 bytes per connection to the update's peak)."""
    for m in model.modules():
        release = getattr(m, "release_arrays", None)
        if callable(release):
            release()
    release = getattr(optimizer, "release_views", None)
    if callable(release):
        release()


def _top_keys(scores: torch.Tensor, flat_keys: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    k = min(k, scores.numel())
    s, i = torch.topk(scores, k, sorted=False)
    return s, flat_keys[i]


class LayerView:
    """Common interface; see :class:`SparseView` and :class:`MaskedView`."""

    module: nn.Module
    n_out: int
    n_in: int

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name = name
        self.module = module

    @property
    def total(self) -> int:
        return self.n_out * self.n_in

    def keys(self) -> torch.Tensor:  # sorted int64 (nnz,)
        """Sorted int64 keys ``row · n_in + column`` of the existing connections, ``(nnz,)``."""
        raise NotImplementedError

    def weights(self) -> torch.Tensor:  # (nnz,), aligned with keys()
        """The connections' weights ``(nnz,)``, aligned with :meth:`keys`."""
        raise NotImplementedError

    def kept_keys(self, keep: torch.Tensor) -> torch.Tensor:
        """Sorted int64 keys of the connections where bool ``keep (nnz,)`` is True (on the CPU)."""
        keys = self.keys()
        return keys[keep.to(keys.device)].cpu()

    def grads(self) -> torch.Tensor | None:  # (nnz,) gradient at existing connections
        """The loss gradient at the existing connections ``(nnz,)``, aligned with :meth:`keys` (None without one)."""
        raise NotImplementedError

    def apply(self, keep: torch.Tensor, new_keys: torch.Tensor, new_values: torch.Tensor,
              optimizer: torch.optim.Optimizer | None) -> None:
        """Drop the connections where ``keep`` is False, add ``new_keys`` with ``new_values``."""
        raise NotImplementedError

    def dense_grad_blocks(self):
        """Yield ``(row0, |dL/dW| block (rows, n_in))`` from the last backward, block by block."""
        raise NotImplementedError

    def capture(self, on: bool) -> None:
        """Start (``on``) or stop keeping the dense gradient the layer's backward forms (RigL's grow score)."""
        self.module.capture = {} if on else None  # type: ignore[assignment]

    def fan_in(self) -> torch.Tensor:
        """Connections into each output neuron, int64 ``(n_out,)``."""
        return torch.bincount(self.keys() // self.n_in, minlength=self.n_out)

    @property
    def nnz(self) -> int:
        return self.keys().numel()

    @property
    def density(self) -> float:
        return self.nnz / self.total

    def top_grad_absent(self, n: int, present: torch.Tensor) -> torch.Tensor:
        """Keys of the ``n`` absent positions (not in sorted ``present``) with the largest |dL/dW|.

        The dense gradient is formed one block of rows at a time with a running top-n, so memory is
        ``O(block + n)``.
        """
        best_s = torch.empty(0)
        best_k = torch.empty(0, dtype=torch.int64)
        if n <= 0:
            return best_k
        for r0, g in self.dense_grad_blocks():
            g = g.abs().reshape(-1).to(torch.float64).cpu()
            base = r0 * self.n_in
            lo, hi = torch.searchsorted(present, torch.tensor([base, base + g.numel()]))
            g[present[lo:hi] - base] = -1.0  # present: never chosen (|grad| ≥ 0 elsewhere)
            keys = torch.arange(base, base + g.numel())
            s, k = _top_keys(g, keys, n)
            best_s, best_k = _top_keys(torch.cat([best_s.to(s), s]), torch.cat([best_k, k]), n)
        ok = best_s >= 0
        return torch.sort(best_k[ok]).values


class _ValuesView(LayerView):
    """A layer whose connections are one value each in ``module.values`` (:class:`SparseView`, :class:`NMView`)."""

    @property
    def nnz(self) -> int:
        return self.module.nnz

    def fan_in(self) -> torch.Tensor:
        return self.module.fan_in()

    def weights(self) -> torch.Tensor:
        return self.module.values.detach()

    def grads(self) -> torch.Tensor | None:
        g = self.module.values.grad
        return None if g is None else g.detach()


class SparseView(_ValuesView):
    """A :class:`~sparta.nn.SparseLinear`: edits are CSR edits."""

    module: SparseLinear

    @property
    def n_out(self) -> int:  # read from the module: ImportancePruning changes it
        return self.module.out_features

    @property
    def n_in(self) -> int:
        return self.module.in_features

    def keys(self) -> torch.Tensor:
        return csr_keys(self.module.indptr, self.module.indices, self.n_in)

    def kept_keys(self, keep: torch.Tensor) -> torch.Tensor:
        m = self.module
        if m.indices.device.type != "cpu":
            return super().kept_keys(keep)
        out = torch.empty(int(torch.count_nonzero(keep)), dtype=torch.int64)  # all connections' keys never exist
        edit.kept_keys(m.indptr.numpy(), m.indices.numpy(), keep.contiguous().numpy(), self.n_in, out.numpy())
        return out

    @torch.no_grad()
    def apply(self, keep, new_keys, new_values, optimizer) -> None:
        m = self.module
        old = m.nnz
        m.values.grad = None  # stale after the edit (rewire drops it too): free it before the new arrays exist
        if self._apply_in_place(keep, new_keys, new_values, optimizer):
            return
        source = m.rewire(keep, new_keys // self.n_in, new_keys % self.n_in, new_values)
        carry_state(optimizer, m.values, source, old)

    def _connection_arrays(self, optimizer: torch.optim.Optimizer | None) -> tuple[list[str], list[torch.Tensor]] | None:
        """The values and every per-connection state tensor of the optimizer (their names in its state), edited
        together in place; None when they cannot be (another device or dtype, not contiguous)."""
        v, old = self.module.values, self.module.nnz
        state = optimizer.state.get(v, {}) if optimizer is not None else {}
        names = [k for k, t in state.items() if isinstance(t, torch.Tensor) and t.dim() == 1 and t.numel() == old]
        tensors = [v.data, *(state[k] for k in names)]
        if v.dtype not in (torch.float32, torch.float64) or any(
                t.dtype != v.dtype or t.device.type != "cpu" or not t.is_contiguous() for t in tensors):
            return None
        return names, tensors

    def _cut(self, total: int, names: list[str], optimizer: torch.optim.Optimizer | None) -> None:
        """Cut the column index, the values and their state to the first ``total`` connections, one array at a
        time (each old array goes as soon as its copy exists)."""
        m = self.module
        m.indices = m.indices[:total].clone()
        state = optimizer.state[m.values] if names else {}
        set_param_data(m.values, m.values.data[:total].clone())
        for k in names:
            state[k] = state[k][:total].clone()

    @torch.no_grad()
    def remove_neurons(self, keep_outputs: torch.Tensor | None, keep_inputs: torch.Tensor | None,
                       optimizer: torch.optim.Optimizer | None) -> None:
        """Shrink the layer to the output rows and input columns kept (bool masks; None keeps all), carrying the
        optimizer's state of the values and the bias. On the CPU in the layer's own arrays (values, column
        index, row pointers and per-connection state move to the front together, then each is cut to size one
        at a time); elsewhere through :meth:`SparseLinear.remove_neurons` and a source map."""
        m = self.module
        v = m.values
        old, old_out = m.nnz, m.out_features
        v.grad = None
        keep_out = torch.ones(old_out, dtype=torch.bool) if keep_outputs is None else torch.as_tensor(keep_outputs)
        keep_in = torch.ones(m.in_features, dtype=torch.bool) if keep_inputs is None else torch.as_tensor(keep_inputs)
        arrays = self._connection_arrays(optimizer)
        ok = arrays is not None and keep_out.device.type == "cpu" and keep_in.device.type == "cpu"
        for k, n in ((keep_out, old_out), (keep_in, m.in_features)):
            if k.dtype != torch.bool or k.shape != (n,) or not bool(k.any()):
                ok = False  # the module's method raises the error
        if not ok or arrays is None:
            carry_state(optimizer, v, m.remove_neurons(keep_outputs, keep_inputs), old)
            if m.bias is not None and keep_outputs is not None:
                carry_state(optimizer, m.bias, torch.nonzero(keep_outputs).reshape(-1), old_out)
            return
        names, tensors = arrays
        del arrays
        new_col = torch.cumsum(keep_in.long(), 0) - 1
        new_col[~keep_in] = -1
        rows, total = edit.remove_neurons_in_place(m.indptr.numpy(), m.indices.numpy(), keep_out.numpy(),
                                                   new_col.numpy(), tuple(t.numpy() for t in tensors))
        del new_col
        torch.autograd.graph.increment_version([m.indptr, m.indices, *tensors])
        del tensors  # each old array must go as soon as its cut copy exists
        m.out_features, m.in_features = rows, int(keep_in.sum())
        m.indptr = m.indptr[:rows + 1].clone()
        self._cut(total, names, optimizer)
        if m.bias is not None and keep_outputs is not None:
            set_param_data(m.bias, m.bias.data[keep_out])
            carry_state(optimizer, m.bias, torch.nonzero(keep_out).reshape(-1), old_out)

    def _apply_in_place(self, keep: torch.Tensor, new_keys: torch.Tensor, new_values: torch.Tensor,
                        optimizer: torch.optim.Optimizer | None) -> bool:
        """:meth:`apply` inside the layer's own arrays and its optimizer state when the connection count does not
        grow (SET, pruning): nothing the size of the layer is allocated (a shrinking layer's arrays are then cut
        to size one at a time). False, with nothing changed, where it does not apply (another device, dtypes
        that differ, new keys not ascending, repeated, out of range or present: the general path then runs and
        raises its errors)."""
        m = self.module
        old = m.nnz
        v = m.values
        keep = torch.as_tensor(keep)
        new_keys = torch.as_tensor(new_keys).reshape(-1)
        if keep.dtype != torch.bool or keep.shape != (old,) or new_keys.dtype != torch.int64:
            return False
        n_new = new_keys.numel()
        if isinstance(new_values, torch.Tensor) and new_values.numel() != n_new:
            return False
        kept = int(torch.count_nonzero(keep))
        if kept + n_new > old:
            return False
        arrays = self._connection_arrays(optimizer)
        if arrays is None:
            return False
        names, tensors = arrays
        del arrays
        ip, ix = m.indptr.numpy(), m.indices.numpy()
        keep_np, keys_np = keep.contiguous().numpy(), new_keys.contiguous().numpy()
        if edit.check_new(ip, ix, keep_np, keys_np, self.n_in, self.total) >= 0:
            return False
        first = new_values.to(v.dtype).contiguous() if isinstance(new_values, torch.Tensor) else \
            torch.full((n_new,), float(new_values or 0.0), dtype=v.dtype)
        zeros = torch.zeros(n_new, dtype=v.dtype)
        total = edit.rewire_in_place(ip, ix, keep_np, keys_np, self.n_in, tuple(t.numpy() for t in tensors),
                                     (first.numpy(), *(zeros.numpy() for _ in names)))
        del first, zeros, ip, ix
        torch.autograd.graph.increment_version([m.indptr, m.indices, *tensors])
        del tensors  # each old array must go as soon as its cut copy exists
        if total < old:
            self._cut(total, names, optimizer)
        return True

    def dense_grad_blocks(self):
        cap = self.module.capture or {}
        if "xt" not in cap:
            raise RuntimeError(f"{self.name}: no gradient captured; run a backward pass after enabling capture")
        xt, dyt = cap["xt"], cap["dyt"]
        rows = max(1, _GROW_BLOCK_ELEMS // self.n_in)
        for r0 in range(0, self.n_out, rows):
            yield r0, dyt[r0:r0 + rows] @ xt.t()


class MaskedView(LayerView):
    """A masked dense layer (``MaskedLinear``/``MaskedConv2d``): edits flip mask entries."""

    def __init__(self, name: str, module: nn.Module) -> None:
        super().__init__(name, module)
        w = module.weight
        self.n_out, self.n_in = w.shape[0], w[0].numel()

    def keys(self) -> torch.Tensor:
        return torch.nonzero(self.module.mask.reshape(-1)).reshape(-1)

    def weights(self) -> torch.Tensor:
        return self.module.weight.detach().reshape(-1)[self.keys()]

    def grads(self) -> torch.Tensor | None:
        g = self.module.weight.grad
        return None if g is None else g.detach().reshape(-1)[self.keys()]

    @torch.no_grad()
    def apply(self, keep, new_keys, new_values, optimizer) -> None:
        m = self.module
        shape = m.weight.shape
        # Index through unravel_index so any memory layout (e.g. channels_last) is edited correctly.
        touched = torch.unravel_index(torch.cat([self.keys()[~keep], new_keys]).to(m.mask.device), shape)
        grown = torch.unravel_index(new_keys.to(m.mask.device), shape)
        m.mask[touched] = False
        m.weight.data[touched] = 0.0
        m.mask[grown] = True
        m.weight.data[grown] = new_values.to(m.weight)
        if m.weight.grad is not None:
            m.weight.grad[touched] = 0.0
        if optimizer is not None and m.weight in optimizer.state:
            for v in optimizer.state[m.weight].values():
                if isinstance(v, torch.Tensor) and v.shape == shape:
                    v[touched] = 0.0

    def dense_grad_blocks(self):
        cap = self.module.capture or {}
        if "grad" not in cap:
            raise RuntimeError(f"{self.name}: no gradient captured; run a backward pass after enabling capture")
        yield 0, cap["grad"].reshape(self.n_out, self.n_in)


class NMView(_ValuesView):
    """An :class:`~sparta.nn.nm.NMLinear`: edits rebuild its positions (and transposed blocks) and check that the
    result is still N:M (transposable N:M for a transposable layer, shared by each group of rows for a vector-wise
    one); ``ValueError`` otherwise."""

    module: NMLinear

    @property
    def n_out(self) -> int:
        return self.module.out_features

    @property
    def n_in(self) -> int:
        return self.module.in_features

    def keys(self) -> torch.Tensor:
        return self.module.keys()

    def key_mask(self, keys: torch.Tensor) -> torch.Tensor:
        """Bool ``(out, in)`` with ``keys`` set."""
        mk = torch.zeros(self.total, dtype=torch.bool)
        mk[keys] = True
        return mk.reshape(self.n_out, self.n_in)

    @torch.no_grad()
    def apply(self, keep, new_keys, new_values, optimizer) -> None:
        m = self.module
        old = m.nnz
        keys = self.keys()
        keep = torch.as_tensor(keep).bool()
        new_keys = torch.as_tensor(new_keys, dtype=torch.int64).reshape(-1)
        all_keys = torch.cat([keys[keep], new_keys])
        src = torch.cat([torch.nonzero(keep).reshape(-1), -1 - torch.arange(new_keys.numel())])
        order = torch.argsort(all_keys)
        all_keys, src = all_keys[order], src[order]
        if all_keys.numel() > 1 and bool((all_keys[1:] == all_keys[:-1]).any()):
            raise ValueError(f"{self.name}: a new connection is already present")
        mk = self.key_mask(all_keys)
        pos = mask_to_pos(mk, m.n, m.m)  # ValueError unless N:M
        check_vector(pos, m.vector, m.out_features)  # and unless each group of rows shares its positions
        tpos = transposed_pos(pos, m.n, m.m, m.out_features, m.in_features) if m.transposable else m.tpos
        m.values.grad = None
        vals = remap(m.values.data, src, new_values if isinstance(new_values, torch.Tensor) else float(new_values))
        m.pos, m.tpos = pos, tpos
        set_param_data(m.values, vals)
        carry_state(optimizer, m.values, src, old)

    def dense_grad_blocks(self):
        cap = self.module.capture or {}
        if "xt" not in cap:
            raise RuntimeError(f"{self.name}: no gradient captured; run a backward pass after enabling capture")
        xt, dyt = cap["xt"], cap["dyt"]
        rows = max(1, (1 << 22) // self.n_in)
        for r0 in range(0, self.n_out, rows):
            yield r0, dyt[r0:r0 + rows] @ xt.t()


def find_layers(model: nn.Module) -> list[LayerView]:
    """Views of every sparse layer in ``model`` (``SparseLinear``, ``MaskedLinear``, ``MaskedConv2d``,
    ``NMLinear``), in registration order."""
    views: list[LayerView] = []
    for name, mod in model.named_modules():
        if isinstance(mod, SparseLinear):
            views.append(SparseView(name, mod))
        elif isinstance(mod, MaskedLinear | MaskedConv2d):
            views.append(MaskedView(name, mod))
        elif isinstance(mod, NMLinear):  # N:M layers (issue 33)
            views.append(NMView(name, mod))
    return views


def connection_count(model: nn.Module) -> tuple[int, int]:
    """``(connections, dense size)`` of ``model``'s weight layers: sparse and masked layers count their
    connections, plain ``nn.Linear``/``nn.Conv2d`` count fully; biases are excluded."""
    nnz = total = 0
    for m in model.modules():
        if isinstance(m, SparseLinear | NMLinear):
            nnz += m.nnz
            total += m.in_features * m.out_features
        elif isinstance(m, MaskedLinear | MaskedConv2d):
            nnz += m.nnz
            total += m.mask.numel()
        elif type(m) in (nn.Linear, nn.Conv2d):
            nnz += m.weight.numel()
            total += m.weight.numel()
    return nnz, total
