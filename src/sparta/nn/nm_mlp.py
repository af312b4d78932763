"""``NMMLP``: an MLP whose hidden layers are :class:`~sparta.nn.nm.NMLinear` (the output layer dense), with a fused
training step (:mod:`sparta.nn.nm_step`), and :func:`to_nm`, the conversion of a trained MLP to N:M."""

from __future__ import annotations

import torch
from torch import nn

from sparta.nn.nm import NMLinear, check_shape, parse_pattern


def _activation(name: str, alpha: float, j: int) -> nn.Module:
    from sparta.nn.activations import AllReLU

    if name == "allrelu":
        return AllReLU(alpha, j)
    mods = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    if name not in mods:
        raise ValueError(f"activation must be one of {('allrelu', *mods)}, got {name!r}")
    return mods[name]()


class NMMLP(nn.Sequential):
    """``sizes = [in, h1, ..., out]``: ``NMLinear`` layers at the pattern ``n:m`` (transposable or not) with an
    activation (and dropout) after each hidden layer; the output layer is a dense ``nn.Linear`` (its width is the
    number of classes, rarely a multiple of ``m``, and it holds a negligible share of the weights — as the
    SET-MLP, whose Erdős–Rényi output layer is dense at ε = 20). An ``nn.Sequential`` of those modules, so
    :class:`~sparta.topology.nm.NMSET` / :class:`~sparta.topology.nm.NMRigL` find and evolve its masks; its
    :meth:`train_step` runs a whole training step fused (:mod:`sparta.nn.nm_step`), as ``SparseMLP``'s does.

    Dropout draws its masks from a hash of ``(seed, step, layer, unit, sample)``
    (:mod:`sparta.kernels.hashrng`, as :class:`~sparta.nn.SparseMLP`), never from torch's generator, so the
    autograd forward and the fused step drop the same units; the counter ``dropout_state = [seed, step]`` is a
    buffer (restored with the state dict) and counts training forwards.

    Args:
        sizes: layer widths; every N:M layer's input width must fit the pattern (:func:`check_shape`).
        pattern: ``"n:m"``. transposable: transposable masks (``m`` must divide every hidden width and the input).
        vector: 1, or 4 for vector-wise layers (groups of 4 output rows share their positions, faster kernels;
            every hidden width a multiple of 4; :class:`~sparta.nn.nm.NMLinear`).
        activation: ``"allrelu"`` (All-ReLU, sign alternating per hidden layer), ``"relu"``, ``"tanh"``,
            ``"sigmoid"``. alpha: All-ReLU's slope. dropout: probability after each hidden activation.
        init: value initialisation of the N:M layers. generator: masks, values and the dropout seed.

    Input ``(..., in)`` → logits ``(..., out)``.
    """

    dropout_state: torch.Tensor

    def __init__(self, sizes: list[int], pattern: str, *, transposable: bool = False, activation: str = "allrelu",
                 alpha: float = 0.6, dropout: float = 0.0, init: str = "uniform",
                 generator: torch.Generator | None = None, vector: int = 1) -> None:
        from sparta.nn.activations import Dropout

        sizes = [int(s) for s in sizes]
        if len(sizes) < 3:
            raise ValueError(f"an N:M MLP needs at least one hidden layer, got sizes {sizes}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        n, m = parse_pattern(pattern)
        for j, (a, b) in enumerate(zip(sizes[:-2], sizes[1:-1], strict=True)):
            try:
                check_shape(a, b, n, m, transposable, vector)
            except ValueError as e:
                raise ValueError(f"layer {j + 1} ({a} → {b}): {e}") from None
        mods: list[nn.Module] = []
        for j, (a, b) in enumerate(zip(sizes[:-2], sizes[1:-1], strict=True)):
            mods.append(NMLinear(a, b, n, m, transposable=transposable, init=init, generator=generator, vector=vector))
            mods.append(_activation(activation, alpha, j + 1))
            if dropout:
                mods.append(Dropout(dropout))
        mods.append(nn.Linear(sizes[-2], sizes[-1]))
        super().__init__(*mods)
        self.pattern, self.transposable, self.vector = f"{n}:{m}", bool(transposable), int(vector)
        self.activation, self.alpha, self.p = activation, float(alpha), float(dropout)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        self.register_buffer("dropout_state", torch.tensor([seed, 0], dtype=torch.int64))
        self._step_cache: tuple | None = None  # (key, sparta.nn.nm_step._NMStructure)

    def slope(self, j: int) -> float:
        """Negative-side slope of the activation after hidden layer ``j`` (1-based) for leaky types."""
        if self.activation == "relu":
            return 0.0
        return -self.alpha if j % 2 == 0 else self.alpha

    def _next_dropout_step(self) -> tuple[int, int] | None:
        """``(seed, step)`` for this forward's masks, and count the step; None when no dropout applies."""
        if not (self.training and self.p > 0):
            return None
        a = self.dropout_state.numpy()
        seed, step = int(a[0]), int(a[1])
        a[1] = step + 1
        return seed, step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (..., in)`` → logits ``(..., out)`` through the modules, dropout by the hash masks (class docstring)."""
        from sparta.kernels.hashrng import keep_mask
        from sparta.nn.activations import Dropout

        rng = self._next_dropout_step()
        hidden = 0
        for mod in self:
            if isinstance(mod, Dropout):
                if rng is not None:
                    h = x.reshape(-1, x.shape[-1])
                    keep = keep_mask(rng[0], rng[1], hidden, self.p, h.shape[1], h.shape[0], device=h.device)
                    x = (h * keep * (1.0 / (1.0 - self.p))).reshape(x.shape)
                continue
            x = mod(x)
            hidden += isinstance(mod, NMLinear)
        return x

    def train_step(self, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer | None = None, *,
                   keep_grad: bool = True) -> tuple[float, int]:
        """One optimizer step on the mean softmax cross-entropy of ``self(x)`` against the labels ``y``: the same
        as ``loss = F.cross_entropy(self(x), y); optimizer.zero_grad(set_to_none=True); loss.backward();
        optimizer.step()``, run as one fused numba pass per part of the batch with no autograd graph
        (:mod:`sparta.nn.nm_step`); with a :mod:`sparta.optim` optimizer and ``keep_grad=False`` the update runs
        inside that pass. Where the fused step does not apply (hooks, a layer capturing gradients for
        RigL, grad mode off, a dtype other than float32/float64) it runs exactly that sequence.

        ``x (B, in)`` float, ``y (B,)`` int64 class indices in ``[0, out)``; ``optimizer=None`` leaves the
        gradients in ``.grad``; ``keep_grad=False`` leaves every ``.grad`` None on return. Returns the batch's
        mean loss and how many of its samples the network classified correctly (``argmax``)."""
        from sparta.nn import nm_step
        from sparta.nn.functional import autograd_step, check_batch

        check_batch(x, y, self[0].in_features)
        st = nm_step.structure(self, x)
        if st is not None and nm_step.plain_step(self, st, x):
            return nm_step.train_step(self, st, x, y, optimizer, keep_grad)
        return autograd_step(self, x, y, optimizer, keep_grad)

    def release_arrays(self) -> None:
        """Forget the fused step's cached views of the layers' arrays (topology algorithms call it before editing)."""
        self._step_cache = None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):  # type: ignore[override]
        state_dict.setdefault(prefix + "dropout_state", self.dropout_state.clone())  # saved before it existed
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self._step_cache = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_step_cache"] = None  # copies and pickles start without the step's numpy views
        return state

    def layer_densities(self) -> list[tuple[str, float]]:
        """``(description, density)`` of every weight layer, input to output."""
        out = []
        for mod in self:
            if isinstance(mod, NMLinear):
                out.append((f"{mod.in_features}→{mod.out_features} {mod.pattern}"
                            f"{' T' if mod.transposable else ''}{f' V{mod.vector}' if mod.vector > 1 else ''}",
                            mod.density))
            elif isinstance(mod, nn.Linear):
                out.append((f"{mod.in_features}→{mod.out_features} dense", 1.0))
        return out


@torch.no_grad()
def to_nm(model: nn.Module, pattern: str, *, transposable: bool = False, vector: int = 1) -> nn.Sequential:
    """A trained MLP as an N:M one (magnitude conversion; fine-tune it afterwards if wanted): every weight layer
    but the last of ``model`` — an ``nn.Sequential`` of ``SparseLinear``/``nn.Linear``/``NMLinear`` and
    activation modules, or a :class:`~sparta.nn.SparseMLP` — becomes an ``NMLinear`` holding its largest
    weights at the pattern (:meth:`NMLinear.from_dense`; transposable: the greedy 2-approximation; ``vector=4``:
    groups of 4 rows sharing their positions, by their summed magnitude); the last
    becomes a dense ``nn.Linear`` with the same weights. Activations and dropout are kept (a ``SparseMLP``'s are
    rebuilt as modules). The result's weights are copies; ``model`` is unchanged."""
    from sparta.nn.activations import Dropout
    from sparta.nn.mlp import SparseMLP

    n, m = parse_pattern(pattern)
    if isinstance(model, SparseMLP):
        mods: list[nn.Module] = []
        for j, layer in enumerate(model.layers):
            mods.append(layer)
            if j < len(model.layers) - 1:
                mods.append(_activation(model.activation, model.alpha, j + 1))
                if model.p:
                    mods.append(Dropout(model.p))
    elif isinstance(model, nn.Sequential):
        mods = list(model)
    else:
        raise TypeError(f"model must be an nn.Sequential or a SparseMLP, got {type(model).__name__}")
    weights = [i for i, mod in enumerate(mods) if isinstance(mod, nn.Linear | NMLinear) or hasattr(mod, "to_dense")]
    if len(weights) < 2:
        raise ValueError("to_nm needs at least two weight layers (the last stays dense)")
    out: list[nn.Module] = []
    for i, mod in enumerate(mods):
        if i not in weights:
            out.append(mod)
            continue
        w = mod.weight.detach() if isinstance(mod, nn.Linear) else mod.to_dense()
        b = getattr(mod, "bias", None)
        if i == weights[-1]:
            lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, dtype=w.dtype)
            lin.weight.copy_(w)
            if b is not None:
                lin.bias.copy_(b.detach())
            out.append(lin)
        else:
            out.append(NMLinear.from_dense(w, n, m, transposable=transposable, bias=b, vector=vector))
    return nn.Sequential(*out)
