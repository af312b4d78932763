"""Sparse layers: ``SparseLinear`` (CSR, truly sparse) and ``MaskedLinear`` (dense × mask reference)."""

from sparta.nn import init, structure
from sparta.nn.functional import sparse_linear
from sparta.nn.linear import SparseLinear
from sparta.nn.masked import MaskedLinear

__all__ = ["MaskedLinear", "SparseLinear", "init", "sparse_linear", "structure"]
