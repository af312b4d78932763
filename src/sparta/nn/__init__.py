"""Sparse layers: ``SparseLinear`` (CSR, truly sparse) and ``MaskedLinear`` (dense × mask reference)."""

from sparta.nn import init, structure
from sparta.nn.activations import AllReLU, Dropout
from sparta.nn.functional import sparse_linear
from sparta.nn.linear import SparseLinear
from sparta.nn.masked import MaskedConv2d, MaskedLinear
from sparta.nn.mlp import SparseMLP

__all__ = ["AllReLU", "Dropout", "MaskedConv2d", "MaskedLinear", "SparseLinear", "SparseMLP", "init", "sparse_linear",
           "structure"]
