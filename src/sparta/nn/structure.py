"""CSR topology operations on index tensors: validate, build from (row, col) pairs, remove, add.

All functions work on torch tensors on any device and cost ``O(nnz log nnz)`` at most. A topology is
``indptr`` (int64, ``out + 1``) and ``indices`` (int32, ``nnz``), columns strictly increasing within
each row. Functions that change a topology also return a *source map*: for each position of the new
topology, the position it had before, or ``-1`` for a new connection. :func:`remap` carries any
per-connection tensor (values, optimizer moments) across with it.
"""

from __future__ import annotations

import torch

from sparta.kernels.torch_ops import rows_of

INDEX_DTYPE = torch.int32
MAX_FEATURES = 2**31 - 1


def keys(indptr: torch.Tensor, indices: torch.Tensor, n_in: int) -> torch.Tensor:
    """Linear key ``row · n_in + col`` of every connection, int64 ``(nnz,)``, ascending for a valid CSR."""
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


def from_coo(
    rows: torch.Tensor, cols: torch.Tensor, n_out: int, n_in: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Build a CSR from connection coordinates ``rows, cols (n,)``.

    Returns ``(indptr, indices, order)`` where ``order[p]`` is the input position placed at CSR position
    ``p``. Raises ``ValueError`` on out-of-range or duplicate coordinates.
    """
    rows = torch.as_tensor(rows).long().reshape(-1)
    cols = torch.as_tensor(cols).long().reshape(-1)
    if rows.numel() != cols.numel():
        raise ValueError(f"rows and cols must have the same length, got {rows.numel()} and {cols.numel()}")
    if rows.numel():
        if int(rows.min()) < 0 or int(rows.max()) >= n_out:
            raise ValueError(f"rows must lie in [0, {n_out}), got {int(rows.min())}..{int(rows.max())}")
        if int(cols.min()) < 0 or int(cols.max()) >= n_in:
            raise ValueError(f"cols must lie in [0, {n_in}), got {int(cols.min())}..{int(cols.max())}")
    k = rows * n_in + cols
    k_sorted, order = torch.sort(k, stable=True)
    if bool((k_sorted[1:] == k_sorted[:-1]).any()):
        dup = int(k_sorted[1:][k_sorted[1:] == k_sorted[:-1]][0])
        raise ValueError(f"duplicate connection (row={dup // n_in}, col={dup % n_in})")
    indptr = torch.zeros(n_out + 1, dtype=torch.int64, device=rows.device)
    indptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n_out), 0)
    return indptr, (k_sorted % n_in).to(INDEX_DTYPE), order


def remove(
    indptr: torch.Tensor, indices: torch.Tensor, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the connections where the boolean ``keep (nnz,)`` is True.

    Returns ``(indptr, indices, source)``; ``source`` holds the old position of each kept connection.
    """
    keep = torch.as_tensor(keep, device=indices.device)
    if keep.dtype != torch.bool or keep.shape != indices.shape:
        raise ValueError(f"keep must be a bool tensor of shape ({indices.numel()},), got {keep.dtype} {tuple(keep.shape)}")
    n_out = indptr.numel() - 1
    rows = rows_of(indptr, indices.numel())[keep]
    new_indptr = torch.zeros_like(indptr)
    new_indptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n_out), 0)
    return new_indptr, indices[keep], torch.nonzero(keep).reshape(-1)


def add(
    indptr: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, n_in: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Insert new connections ``(rows[i], cols[i])``.

    Returns ``(indptr, indices, source)`` where ``source[p]`` is the old position of the connection now
    at ``p``, or ``-1 - i`` when it is the ``i``-th new one. Raises ``ValueError`` when a new connection
    is out of range, repeated, or already present.
    """
    n_out = indptr.numel() - 1
    nnz = indices.numel()
    new_indptr, _, _ = from_coo(rows, cols, n_out, n_in)  # validates range and repeats among the new
    old_k = keys(indptr, indices, n_in)
    rows = torch.as_tensor(rows, device=indices.device).long().reshape(-1)
    cols = torch.as_tensor(cols, device=indices.device).long().reshape(-1)
    new_k = rows * n_in + cols
    if nnz and new_k.numel():
        pos = torch.searchsorted(old_k, new_k).clamp_max(nnz - 1)
        clash = old_k[pos] == new_k
        if bool(clash.any()):
            r, c = int(rows[clash][0]), int(cols[clash][0])
            raise ValueError(f"connection (row={r}, col={c}) already exists")
    all_k = torch.cat([old_k, new_k])
    all_k, order = torch.sort(all_k, stable=True)
    source = torch.where(order < nnz, order, -1 - (order - nnz))
    indptr_out = torch.zeros_like(indptr)
    indptr_out[1:] = indptr[1:] + new_indptr[1:]
    return indptr_out, (all_k % n_in).to(INDEX_DTYPE), source


def remap(old: torch.Tensor, source: torch.Tensor, new: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Carry a per-connection tensor across a topology change.

    ``old (nnz_old, ...)``; ``source (nnz_new,)`` as returned by :func:`remove`/:func:`add` (negative for
    new connections, ``-1 - i`` for the ``i``-th added one). New connections take ``new``: a scalar, or a
    tensor indexed by ``i``.
    """
    out = old.new_empty((source.numel(), *old.shape[1:]))
    kept = source >= 0
    out[kept] = old[source[kept]]
    fresh = ~kept
    if isinstance(new, torch.Tensor):
        out[fresh] = new.to(old)[(-1 - source[fresh])]
    else:
        out[fresh] = new
    return out
