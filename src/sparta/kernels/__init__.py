"""Sparse kernels: pure functions on arrays. ``cpu`` (numba) and ``torch_ops`` (any torch device)."""
