"""Sparse kernels: pure functions on arrays.

``fused`` (numba, CPU: tiled forward/backward kernels with epilogues), ``optim`` (numba optimizer updates),
``hashrng`` (counter-based dropout masks), ``nm`` and ``nm_step`` (N:M layers and the N:M MLP's fused pass),
``sac`` (SAC's squashed-Gaussian sample), ``torch_ops`` (any torch device), and ``threads`` (sparta's workers).
"""
