"""Sparse kernels: pure functions on arrays.

``fused`` (numba, CPU: tiled forward/backward kernels with epilogues), ``optim`` (numba optimizer updates),
``hashrng`` (counter-based dropout masks), ``torch_ops`` (any torch device), and ``threads`` (sparta's workers).
"""
