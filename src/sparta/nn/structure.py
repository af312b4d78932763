"""CSR topology operations on index tensors: validate, build from (row, col) pairs, remove, add.

All functions work on torch tensors on any device and cost ``O(nnz log nnz)`` at most. A topology is
``indptr`` (int64, ``out + 1``) and ``indices`` (int32, ``nnz``), columns strictly increasing within
each row. Functions that change a topology also return a *source map*: for each position of the new
topology, the position it had before, or ``-1`` for a new connection. :func:`remap` carries any
per-connection tensor (values, optimizer moments) across with it.
"""

from __future__ import annotations

import numpy as np
import torch

from sparta.kernels.torch_ops import rows_of

INDEX_DTYPE = torch.int32
_REMAP_DTYPES = (torch.float32, torch.float64)
MAX_FEATURES = 2**31 - 1


def keys(indptr: torch.Tensor, indices: torch.Tensor, n_in: int) -> torch.Tensor:
    """Linear key ``row · n_in + col`` of every connection, int64 ``(nnz,)``, ascending for a valid CSR."""
    if indices.device.type == "cpu":  # one pass, 8 bytes per connection (the torch expression holds ~40)
        from sparta.kernels import edit

        out = torch.empty(indices.numel(), dtype=torch.int64)
        edit.csr_keys(indptr.contiguous().numpy(), indices.contiguous().numpy(), int(n_in), out.numpy())
        return out
    return rows_of(indptr, indices.numel()) * n_in + indices.long()


def validate(indptr: torch.Tensor, indices: torch.Tensor, n_out: int, n_in: int, name: str = "topology") -> None:
    """Raise ``ValueError`` unless ``(indptr, indices)`` is a valid CSR of an ``n_out × n_in`` matrix."""
    if indptr.dim() != 1 or indptr.numel() != n_out + 1:
        raise ValueError(f"{name}: indptr must have shape ({n_out + 1},), got {tuple(indptr.shape)}")
    if indices.dim() != 1:
        raise ValueError(f"{name}: indices must be 1-D, got shape {tuple(indices.shape)}")
    if indptr.dtype != torch.int64 or indices.dtype != INDEX_DTYPE:
        raise ValueError(f"{name}: expected int64 indptr and int32 indices, got {indptr.dtype} and {indices.dtype}")
    nnz = indices.numel()
    if int(indptr[0]) != 0 or int(indptr[-1]) != nnz:
        raise ValueError(f"{name}: indptr must start at 0 and end at nnz={nnz}, got {int(indptr[0])}..{int(indptr[-1])}")
    if bool((indptr[1:] < indptr[:-1]).any()):
        raise ValueError(f"{name}: indptr must be non-decreasing")
    if nnz == 0:
        return
    if int(indices.min()) < 0 or int(indices.max()) >= n_in:
        raise ValueError(f"{name}: column indices must lie in [0, {n_in}), got {int(indices.min())}..{int(indices.max())}")
    k = keys(indptr, indices, n_in)
    if bool((k[1:] <= k[:-1]).any()):
        raise ValueError(f"{name}: columns must be strictly increasing within each row (sorted, no duplicates)")


def _coords(rows, cols, n_out: int, n_in: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows, cols`` as flat int64 tensors, checked to be equally long and inside ``n_out × n_in``."""
    rows = torch.as_tensor(rows, device=device).long().reshape(-1)
    cols = torch.as_tensor(cols, device=device).long().reshape(-1)
    if rows.numel() != cols.numel():
        raise ValueError(f"rows and cols must have the same length, got {rows.numel()} and {cols.numel()}")
    if rows.numel():
        if int(rows.min()) < 0 or int(rows.max()) >= n_out:
            raise ValueError(f"rows must lie in [0, {n_out}), got {int(rows.min())}..{int(rows.max())}")
        if int(cols.min()) < 0 or int(cols.max()) >= n_in:
            raise ValueError(f"cols must lie in [0, {n_in}), got {int(cols.min())}..{int(cols.max())}")
    return rows, cols


def from_coo(
    rows: torch.Tensor, cols: torch.Tensor, n_out: int, n_in: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Build a CSR from connection coordinates ``rows, cols (n,)``.

    Returns ``(indptr, indices, order)`` where ``order[p]`` is the input position placed at CSR position
    ``p``. Raises ``ValueError`` on out-of-range or duplicate coordinates.
    """
    rows, cols = _coords(rows, cols, n_out, n_in, None)
    k = rows * n_in + cols
    k_sorted, order = torch.sort(k, stable=True)
    if bool((k_sorted[1:] == k_sorted[:-1]).any()):
        dup = int(k_sorted[1:][k_sorted[1:] == k_sorted[:-1]][0])
        raise ValueError(f"duplicate connection (row={dup // n_in}, col={dup % n_in})")
    indptr = torch.zeros(n_out + 1, dtype=torch.int64, device=rows.device)
    indptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n_out), 0)
    return indptr, (k_sorted % n_in).to(INDEX_DTYPE), order


def rewire(
    indptr: torch.Tensor, indices: torch.Tensor, keep: torch.Tensor | None, rows: torch.Tensor, cols: torch.Tensor,
    n_in: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the connections where bool ``keep (nnz,)`` is True (all when None) and add ``(rows[i], cols[i])``:
    on the CPU in one linear merge that allocates only its outputs, elsewhere in one sort.

    Returns ``(indptr, indices, source)``: ``source[p]`` is the old position of the connection now at ``p``,
    or ``-1 - i`` for the ``i``-th new one. Raises ``ValueError`` when a new connection is out of range,
    repeated, or already present among the kept ones.
    """
    n_out = indptr.numel() - 1
    nnz = indices.numel()
    dev = indices.device
    if keep is not None:
        keep = torch.as_tensor(keep, device=dev)
        if keep.dtype != torch.bool or keep.shape != indices.shape:
            raise ValueError(f"keep must be a bool tensor of shape ({nnz},), got {keep.dtype} {tuple(keep.shape)}")
    rows, cols = _coords(rows, cols, n_out, n_in, dev)
    if dev.type == "cpu":
        return _rewire_cpu(indptr, indices, keep, rows, cols, n_in)
    return _rewire_sort(indptr, indices, keep, rows, cols, n_in)


def _rewire_sort(indptr: torch.Tensor, indices: torch.Tensor, keep: torch.Tensor | None, rows: torch.Tensor,
                 cols: torch.Tensor, n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`rewire` on any device by one sort of int64 keys (~100 bytes per connection of transients)."""
    n_out = indptr.numel() - 1
    nnz = indices.numel()
    dev = indices.device
    if keep is None:
        kept_pos = torch.arange(nnz, device=dev)
        old_k = keys(indptr, indices, n_in)
    else:
        kept_pos = torch.nonzero(keep).reshape(-1)
        old_k = keys(indptr, indices, n_in)[kept_pos]
    n_kept = old_k.numel()
    all_k, order = torch.sort(torch.cat([old_k, rows * n_in + cols]), stable=True)
    same = all_k[1:] == all_k[:-1]
    if bool(same.any()):
        i = int(torch.nonzero(same)[0])
        r, c = int(all_k[i]) // n_in, int(all_k[i]) % n_in
        if int(order[i]) < n_kept:  # stable sort: a kept connection comes first
            raise ValueError(f"connection (row={r}, col={c}) already exists")
        raise ValueError(f"duplicate connection (row={r}, col={c})")
    source = torch.where(order < n_kept, kept_pos[order.clamp_max(max(n_kept - 1, 0))] if n_kept else order,
                         -1 - (order - n_kept))
    new_indptr = torch.zeros_like(indptr)
    new_indptr[1:] = torch.cumsum(torch.bincount(all_k // n_in, minlength=n_out), 0)
    return new_indptr, (all_k % n_in).to(INDEX_DTYPE), source


def _rewire_cpu(indptr: torch.Tensor, indices: torch.Tensor, keep: torch.Tensor | None, rows: torch.Tensor,
                cols: torch.Tensor, n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`rewire` on the CPU by a linear merge (:mod:`sparta.kernels.edit`): only the new connections are
    sorted, and nothing per connection is allocated beyond the new indices and the source map."""
    from sparta.kernels import edit

    new_k = rows * n_in + cols
    if new_k.numel() > 1 and not bool((new_k[1:] >= new_k[:-1]).all()):
        new_k, order = torch.sort(new_k, stable=True)
        rows, cols = new_k // n_in, new_k % n_in
    else:
        order = torch.arange(new_k.numel())
    del new_k
    keep_np = np.ones(indices.numel(), dtype=np.bool_) if keep is None else keep.contiguous().numpy()
    new_indptr, new_indices, source, status = edit.merge(
        indptr.contiguous().numpy(), indices.contiguous().numpy(), keep_np, rows.contiguous().numpy(),
        cols.to(indices.dtype).contiguous().numpy(), order.contiguous().numpy())
    if status >= 0:
        j = status // 2
        r, c = int(rows[j]), int(cols[j])
        if status % 2 == 0:
            raise ValueError(f"connection (row={r}, col={c}) already exists")
        raise ValueError(f"duplicate connection (row={r}, col={c})")
    return torch.from_numpy(new_indptr), torch.from_numpy(new_indices), torch.from_numpy(source)


def remove(
    indptr: torch.Tensor, indices: torch.Tensor, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the connections where the boolean ``keep (nnz,)`` is True.

    Returns ``(indptr, indices, source)``; ``source`` holds the old position of each kept connection.
    """
    empty = torch.empty(0, dtype=torch.int64, device=indices.device)
    n_in = int(indices.max()) + 1 if indices.numel() else 1
    return rewire(indptr, indices, keep, empty, empty, n_in)


def add(
    indptr: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, n_in: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Insert new connections ``(rows[i], cols[i])``; see :func:`rewire` for the source map and errors."""
    return rewire(indptr, indices, None, rows, cols, n_in)


def remap(old: torch.Tensor, source: torch.Tensor, new: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Carry a per-connection tensor across a topology change.

    ``old (nnz_old, ...)``; ``source (nnz_new,)`` as returned by :func:`remove`/:func:`add` (negative for
    new connections, ``-1 - i`` for the ``i``-th added one). New connections take ``new``: a scalar, or a
    tensor indexed by ``i``.
    """
    if old.dim() == 1 and old.device.type == "cpu" and source.device.type == "cpu" and old.dtype in _REMAP_DTYPES:
        from sparta.kernels import edit

        out = torch.empty(source.numel(), dtype=old.dtype)
        fresh = new.to(old).reshape(-1).contiguous() if isinstance(new, torch.Tensor) else old.new_empty(0)
        fill = 0.0 if isinstance(new, torch.Tensor) else float(new)
        edit.remap_into(old.detach().contiguous().numpy(), source.contiguous().numpy(), fresh.numpy(), fill, out.numpy())
        return out
    kept = (source >= 0).reshape(-1, *([1] * (old.dim() - 1)))
    gathered = old[source.clamp_min(0)] if old.shape[0] else old.new_zeros((source.numel(), *old.shape[1:]))
    if isinstance(new, torch.Tensor):
        new = new.to(old)
        fresh = new[(-1 - source).clamp(0, max(new.shape[0] - 1, 0))] if new.shape[0] else torch.zeros_like(gathered)
        return torch.where(kept, gathered, fresh)
    return torch.where(kept, gathered, torch.tensor(new, dtype=old.dtype, device=old.device))
