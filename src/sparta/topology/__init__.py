"""Topology algorithms on one base class (a drop rule, a grow rule and a schedule).

``Static``, ``SET``, ``RigL``, ``GMP`` (gradual magnitude pruning), ``ImportancePruning``; ``Chain`` steps
several together; ``sparsify`` makes a dense model sparse with uniform, Erdős–Rényi or ERK layer densities.
"""

from sparta.topology.base import TopologyAlgorithm
from sparta.topology.chain import Chain
from sparta.topology.distribution import layer_densities, sparsify
from sparta.topology.gmp import GMP, cubic_sparsity
from sparta.topology.importance import ImportancePruning
from sparta.topology.layers import LayerView, find_layers
from sparta.topology.rigl import RigL
from sparta.topology.set import SET
from sparta.topology.static import Static

__all__ = ["GMP", "Chain", "SET", "ImportancePruning", "LayerView", "RigL", "Static", "TopologyAlgorithm",
           "cubic_sparsity", "find_layers", "layer_densities", "sparsify"]
