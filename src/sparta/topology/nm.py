"""N:M masks and dynamic N:M sparse training on the topology contract.

Masks (``scores (out, in)``, e.g. ``|W|``; bool ``(out, in)`` results):

* :func:`sparta.nn.nm.magnitude_mask` — the top ``N`` of every block (exact for plain N:M); for transposable
  masks the greedy 2-approximation (Hubara et al., NeurIPS 2021) completed by augmenting paths;
* :func:`transposable_exact` — the best transposable mask, per ``M × M`` block a min-cost flow (networkx; a
  reference for tests and the mask-quality benchmark, ``pip install networkx``);
* :func:`kept_fraction` — the share of the total score a mask keeps.

Dynamic training: :class:`NMSET` and :class:`NMRigL` are SET and RigL (same drop scores, same schedules) whose
regrowth stays inside the blocks the drops emptied, so the layer is N:M (and transposable N:M) after every
update. On a vector-wise layer (``NMLinear(vector=4)``) they drop and grow whole units — a position shared by a
group of rows, scored by the group's summed ``|w|`` (drops) or grow scores — so the groups keep sharing their
positions. Their only new piece is :meth:`NMGrowth.final_mask`. Each update ranks, per block, the kept connections
first, then the absent positions by a grow score, then the connections just dropped (taken back, with their
values and optimizer state, only where a block has no other room), and keeps the best ``N`` per block
(transposable: greedy on the ``M × M`` block, completed by augmenting paths; where an augmenting path removes a
kept connection it is dropped too). RigL's grow score is ``|∂L/∂W|`` (:meth:`NMRigL.grow_score`, one dense
``(out, in)`` score matrix per layer); SET's is random, drawn per block inside one numba kernel
(:func:`sparta.kernels.nm.regrow_random`) without a score matrix or a sort. Either is ``O(in · out)`` per layer
(SET: a byte of state per position; RigL: a float64 score), cheap at the SET-MLP's sizes.

:class:`~sparta.topology.layers.NMView` is the :class:`~sparta.topology.layers.LayerView` of
:class:`~sparta.nn.nm.NMLinear`, so GMP-free
algorithms that only drop and grow (``Static`` too) see N:M layers like any other.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sparta.kernels import nm as knm
from sparta.nn.nm import NMLinear, check_shape, magnitude_mask
from sparta.topology.layers import LayerView, NMView
from sparta.topology.rigl import RigL
from sparta.topology.set import SET


def transposable_exact(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The transposable N:M mask of largest total ``scores (out, in)`` (``m`` divides both sizes), exactly: per
    ``M × M`` block a min-cost flow source → rows (capacity ``n``) → columns (capacity 1, cost ``-score``) →
    sink (capacity ``n``), solved by networkx's network simplex on integer costs (scores scaled by 10⁹ / max).
    ``O(blocks · M³)`` or worse: a reference, not a training-time method. Returns bool ``(out, in)``."""
    import networkx as nx

    out_f, in_f = scores.shape
    check_shape(in_f, out_f, n, m, True)
    s = scores.detach().to(torch.float64).cpu()
    scale = 1e9 / max(float(s.abs().max()), 1e-300)
    mask = torch.zeros(out_f, in_f, dtype=torch.bool)
    for bo in range(out_f // m):
        for bi in range(in_f // m):
            blk = s[bo * m:(bo + 1) * m, bi * m:(bi + 1) * m]
            g = nx.DiGraph()
            g.add_node("s", demand=-m * n)
            g.add_node("t", demand=m * n)
            for r in range(m):
                g.add_edge("s", ("r", r), capacity=n, weight=0)
                g.add_edge(("c", r), "t", capacity=n, weight=0)
                for c in range(m):
                    g.add_edge(("r", r), ("c", c), capacity=1, weight=-int(round(float(blk[r, c]) * scale)))
            flow = nx.min_cost_flow(g)
            for r in range(m):
                for c, f in flow[("r", r)].items():
                    if f:
                        mask[bo * m + r, bi * m + c[1]] = True
    return mask


def kept_fraction(scores: torch.Tensor, mask: torch.Tensor) -> float:
    """``Σ scores[mask] / Σ scores``: the share of the magnitude a mask keeps (``scores ≥ 0``)."""
    total = float(scores.sum())
    return float(scores[mask].sum()) / total if total else 1.0


class NMGrowth:
    """Mixin for a drop-and-grow algorithm on N:M layers: regrowth inside the blocks the drops emptied. A subclass
    gives either :meth:`grow_score` (a score per position, ranked by :meth:`final_mask`; RigL) or its own
    :meth:`final_mask` (SET: random, per block). Put it before the algorithm class (``class NMSET(NMGrowth, SET)``)."""

    def grow_score(self, view: LayerView) -> torch.Tensor:
        """Score of every position, float64 ``(out, in)`` (higher grows first); only absent ones matter."""
        raise NotImplementedError

    def final_mask(self, view: NMView, keys: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """The layer's mask after the update, bool flat ``(out · in)``: per block the kept connections ``keys[keep]``
        first, then the absent positions by :meth:`grow_score`, then the connections just dropped (``keys[~keep]``),
        ``N`` per block (transposable: greedy on the ``M × M`` block, completed by augmenting paths)."""
        m = view.module
        score = self.grow_score(view).to(torch.float64).reshape(-1)
        lo, hi = float(score.min()), float(score.max())
        score = (score - lo) / (hi - lo) * 0.5 if hi > lo else torch.zeros_like(score)  # absent: [0, 0.5]
        score[keys[keep]] = 2.0  # kept first
        score[keys[~keep]] -= 1.0  # just dropped: last, taken back only where a block has no other room
        return magnitude_mask(score.reshape(view.n_out, view.n_in), m.n, m.m, m.transposable, m.vector).reshape(-1)

    def unit_drops(self, view: NMView, n: int, units: int) -> int:
        """How many of a vector-wise layer's ``units`` (a group of rows at one position) to drop, given the
        algorithm's count ``n`` of connections: ``n // vector``."""
        return n // view.module.vector

    def drop_mask(self, view: LayerView, n: int) -> torch.Tensor:
        """The base algorithm's drops; on a vector-wise N:M layer whole units instead — the positions a group of
        rows shares, ranked by the group's summed ``|w|`` (:meth:`unit_drops` of them), every row's connection at
        a dropped position dropped — so that regrowth can keep the groups' positions shared."""
        if not isinstance(view, NMView) or view.module.vector == 1:
            return super().drop_mask(view, n)  # type: ignore[misc]
        v = view.module.vector
        score = view.weights().detach().abs().to(torch.float64).cpu().reshape(view.n_out // v, v, -1).sum(1)
        k = min(self.unit_drops(view, n, score.numel()), score.numel())
        drop = torch.zeros_like(score, dtype=torch.bool)
        if k > 0:
            drop.view(-1)[torch.topk(score.reshape(-1), k, largest=False).indices] = True
        return drop[:, None, :].expand(-1, v, -1).reshape(-1)

    def grow_from_kept(self, view: LayerView, n: int, keep: torch.Tensor) -> torch.Tensor:
        """Keys of ``n`` new connections of an N:M layer, grown inside the blocks the drops emptied (other layers:
        the base algorithm's rule)."""
        if not isinstance(view, NMView):
            return super().grow_from_kept(view, n, keep)  # type: ignore[misc]
        keys = view.keys()
        final = self.final_mask(view, keys, keep)
        # a connection in the final mask stays (a dropped one taken back keeps its value and optimizer state); an
        # augmenting path of a transposable block may give up a kept one
        keep.copy_(final[keys])
        chosen = final.clone()
        chosen[keys] = False
        return torch.nonzero(chosen).reshape(-1)


class NMSET(NMGrowth, SET):
    """SET on N:M layers (Mocanu et al. 2018's drop rule and schedule; random regrowth inside the emptied blocks).
    Arguments as :class:`~sparta.topology.SET`; other sparse layers of the model evolve as under SET."""

    def unit_drops(self, view: NMView, n: int, units: int) -> int:
        """SET's fraction ``zeta`` of a vector-wise layer's units (the smallest by their group's summed |w|)."""
        return int(self.zeta * units)

    def grow_score(self, view: LayerView) -> torch.Tensor:
        """Uniformly random scores ``(out, in)`` from the algorithm's generator (vector-wise layers, whose groups
        rank the sum of their rows' scores)."""
        return torch.rand(view.n_out, view.n_in, generator=self.generator, dtype=torch.float64)

    def final_mask(self, view: NMView, keys: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """As :meth:`NMGrowth.final_mask` with uniformly random grow scores, drawn per block by
        :func:`sparta.kernels.nm.regrow_random` (no dense score matrix, no sort); its seed comes from the
        algorithm's generator, so a run restored from a checkpoint draws the same connections. A vector-wise layer
        ranks random scores of each group's units (:meth:`grow_score`) instead."""
        mod = view.module
        if mod.vector > 1:
            return super().final_mask(view, keys, keep)
        state = torch.zeros(view.n_out * view.n_in, dtype=torch.uint8)
        state[keys[~keep]] = 1
        state[keys[keep]] = 2
        seed = int(torch.randint(1, 2**62, (1,), generator=self.generator))
        mask = np.empty(view.n_out * view.n_in, np.uint8)
        knm.regrow_random(state.numpy(), mod.n, mod.m, view.n_out, view.n_in, mod.transposable, seed, mask)
        return torch.from_numpy(mask).view(torch.bool)


class NMRigL(NMGrowth, RigL):
    """RigL on N:M layers (Evci et al. 2020's drop rule and cosine schedule; regrowth by ``|∂L/∂W|`` inside the
    emptied blocks, new weights at zero). Arguments as :class:`~sparta.topology.RigL`."""

    def grow_score(self, view: LayerView) -> torch.Tensor:
        """``|∂L/∂W|`` as ``(out, in)`` float64 scores from the captured gradient (RigL's regrowth)."""
        out = torch.empty(view.n_out, view.n_in, dtype=torch.float64)
        for r0, g in view.dense_grad_blocks():
            out[r0:r0 + g.shape[0]] = g.abs()
        return out


def check_nm(model: nn.Module) -> None:
    """Raise ``ValueError`` unless every :class:`~sparta.nn.nm.NMLinear` of ``model`` holds a valid N:M (and, if
    transposable, column-wise N:M) mask: counts per block of rows and columns recomputed from the mask."""
    for name, mod in model.named_modules():
        if not isinstance(mod, NMLinear):
            continue
        mod.check()
        mk = mod.mask()
        g = mod.blocks
        padded = torch.zeros(mod.out_features, g * mod.m, dtype=torch.bool)
        padded[:, :mod.in_features] = mk
        if bool((padded.reshape(mod.out_features, g, mod.m).sum(-1) != mod.n).any()):
            raise ValueError(f"{name}: a block of a row does not hold {mod.n} connections")
        if mod.transposable and bool((mk.t().reshape(mod.in_features, -1, mod.m).sum(-1) != mod.n).any()):
            raise ValueError(f"{name}: a block of a column does not hold {mod.n} connections")
