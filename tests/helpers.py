"""Shared test helpers: float64 dense references, layer/input factories and error-bound checks."""

from __future__ import annotations

import torch

from sparta import SparseLinear

# Tolerance relative to the sum of absolute terms of each output (a standard bound on summation error).
TOL = {torch.float32: 1e-4, torch.float64: 1e-12}


def assert_bounded(got: torch.Tensor, ref: torch.Tensor, scale: torch.Tensor, tol: float, what: str = "") -> None:
    """``|got - ref| <= tol * scale`` elementwise, where ``scale`` is the sum of |terms| behind each entry.

    Entries whose scale is 0 (an output neuron with no inputs and no bias, an input with no outputs)
    must therefore be exactly 0.
    """
    assert got.shape == ref.shape, f"{what}: shape {tuple(got.shape)} != reference {tuple(ref.shape)}"
    assert torch.isfinite(got).all(), f"{what}: non-finite values"
    err = (got.detach().double() - ref.double()).abs()
    bound = tol * scale.double() + 1e-300
    bad = err > bound
    if bool(bad.any()):
        i = int(torch.argmax((err / bound).reshape(-1)))
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {err.numel()} entries off; worst flat index {i}: "
            f"got {got.reshape(-1)[i].item()!r}, ref {ref.reshape(-1)[i].item()!r}, allowed {bound.reshape(-1)[i].item():.3g}"
        )


def dense_reference(layer: SparseLinear, x: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    """float64 ``y = x Wᵀ + b`` with ``W = layer.to_dense()`` and the gradients of ``(y * g).sum()``.

    Returns ``y, dx, dvalues (in CSR order), dbias`` and the matching absolute-term scales ``*_scale``.
    """
    w = layer.to_dense().double().requires_grad_()
    b = None if layer.bias is None else layer.bias.detach().double().requires_grad_()
    xd = x.detach().double().requires_grad_()
    y = xd @ w.T
    if b is not None:
        y = y + b
    gd = g.detach().double()
    (y * gd).sum().backward()
    rows, cols = layer.rows(), layer.indices.long()
    out = {"y": y.detach(), "dx": xd.grad, "dvalues": w.grad[rows, cols]}
    with torch.no_grad():
        wa, xa, ga = w.abs(), xd.abs(), gd.abs()
        out["y_scale"] = xa @ wa.T + (0 if b is None else b.abs())
        out["dx_scale"] = ga @ wa
        g2, x2 = ga.reshape(-1, layer.out_features), xa.reshape(-1, layer.in_features)
        out["dvalues_scale"] = (g2.T @ x2)[rows, cols]
        if b is not None:
            out["dbias"] = b.grad
            out["dbias_scale"] = g2.sum(0)
    return out


def check_layer_against_dense(layer: SparseLinear, x: torch.Tensor, g: torch.Tensor | None = None,
                              tol: float | None = None) -> torch.Tensor:
    """Run ``layer`` forward and backward on ``x`` and compare everything with :func:`dense_reference`."""
    dtype = layer.values.dtype
    tol = TOL[dtype] if tol is None else tol
    x = x.detach().requires_grad_()
    layer.zero_grad(set_to_none=True)
    y = layer(x)
    expected_shape = (*x.shape[:-1], layer.out_features)
    assert tuple(y.shape) == expected_shape
    assert y.dtype == dtype
    if g is None:
        g = torch.randn(expected_shape, dtype=torch.float64)
    ref = dense_reference(layer, x, g)
    assert_bounded(y, ref["y"], ref["y_scale"], tol, "forward")
    (y * g.to(dtype)).sum().backward()
    assert x.grad is not None and layer.values.grad is not None
    assert layer.values.grad.shape == (layer.nnz,)
    assert_bounded(x.grad, ref["dx"], ref["dx_scale"], tol, "grad x")
    assert_bounded(layer.values.grad, ref["dvalues"], ref["dvalues_scale"], tol, "grad values")
    if layer.bias is not None:
        assert_bounded(layer.bias.grad, ref["dbias"], ref["dbias_scale"], tol, "grad bias")
    return y


def make_layer(in_f: int, out_f: int, density: float, *, dtype=torch.float64, backend="auto", bias=True,
               empty_rows: int = 0, empty_cols: int = 0, seed: int = 0) -> SparseLinear:
    """A seeded random layer; ``empty_rows``/``empty_cols`` output/input neurons lose all their connections.

    The bias is re-drawn afterwards so that neurons without inputs still have a non-zero bias.
    """
    gen = torch.Generator().manual_seed(seed)
    layer = SparseLinear(in_f, out_f, density, bias=bias, dtype=dtype, backend=backend, generator=gen)
    if empty_rows or empty_cols:
        er = torch.randperm(out_f, generator=gen)[:empty_rows]
        ec = torch.randperm(in_f, generator=gen)[:empty_cols]
        drop = torch.isin(layer.rows(), er) | torch.isin(layer.indices.long(), ec)
        layer.remove_connections(drop)
        assert (layer.fan_in()[er] == 0).all()
    if bias:
        with torch.no_grad():
            layer.bias.copy_(torch.rand(out_f, generator=gen, dtype=torch.float64) * 2 - 1)
    return layer


def make_input(lead: tuple[int, ...], in_f: int, dtype, layout: str = "contiguous", seed: int = 0) -> torch.Tensor:
    """Random input of shape ``(*lead, in_f)`` laid out as a contiguous tensor, a transposed/permuted view
    (``"transposed"``) or a slice with a step (``"step"``)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (*lead, in_f)
    if layout == "contiguous":
        x = torch.randn(shape, generator=gen, dtype=dtype)
    elif layout == "transposed":
        x = torch.randn(shape[::-1], generator=gen, dtype=dtype).permute(*reversed(range(len(shape))))
    elif layout == "step":
        big = torch.randn((*lead[:-1], 2 * lead[-1], 3 * in_f) if lead else (3 * in_f,), generator=gen, dtype=dtype)
        x = big[..., ::2, 1::3] if lead else big[1::3]
    else:
        raise ValueError(layout)
    assert tuple(x.shape) == shape
    return x


def in_fresh_process(module: str, func: str, *args: object):
    """``module.func(*args)`` run in a new Python process, its JSON-able result returned.

    For peak-memory measurements: in the test process, memory that earlier tests freed stays in the
    allocator and serves new allocations without raising the resident size, which would hide them.
    """
    import json
    import subprocess
    import sys
    from pathlib import Path

    code = f"import json, {module} as m; print(json.dumps(m.{func}(*{args!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                         cwd=Path(__file__).resolve().parents[1])
    if out.returncode != 0:
        raise AssertionError(f"{module}.{func}{args!r} failed in a fresh process:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
