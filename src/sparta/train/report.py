"""Plots of a run directory (matplotlib, Agg backend; PNG files).

:func:`report` writes, for a run (and its dense twin when one was trained):

* ``learning_curves.png`` — train and test accuracy and loss per epoch, sparse and dense side by side;
* ``connections.png`` — connections per epoch, and (active) hidden neurons when they change (Importance
  Pruning, neurons that lose all their connections);
* ``degree_distributions.png`` — in-degree histogram of the output neurons of each layer of the main model at its
  last checkpoint;
* ``input_connectivity.png`` — connections each input feature keeps in the first layer, as an image when the
  input is an image (28 × 28, 8 × 8, 3 × 32 × 32 averaged over channels), at four evenly spaced epochs from the
  first to the last: the picture of the SET paper, where connections gather on the informative pixels;
* ``weight_histograms.png`` — histograms of the weights of each layer at the last checkpoint.

Each ``plot_*`` function builds its figure with a ``figure_*`` function (returned, for inspection) and saves it.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from sparta.rundir.files import read_metrics
from sparta.rundir.stats import degrees, layer_weights, weight_layers
from sparta.train.runs import load_model, runs_in

PLOTS = ("learning_curves.png", "connections.png", "degree_distributions.png", "input_connectivity.png",
         "weight_histograms.png")
_STYLE = {"sparse": dict(color="C0"), "dense": dict(color="C1")}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def image_shape(n: int) -> tuple[int, ...] | None:
    """How to show ``n`` input features as an image: ``(s, s)`` (8 × 8 digits, 28 × 28 MNIST) or ``(3, s, s)``
    (channels first, as CIFAR-10 stores them); None for other sizes (shown as a line per feature)."""
    s = math.isqrt(n)
    if n >= 16 and s * s == n:
        return (s, s)
    if n >= 48 and n % 3 == 0 and math.isqrt(n // 3) ** 2 == n // 3:
        s = math.isqrt(n // 3)
        return (3, s, s)
    return None


def _label(label: str, algo: str) -> str:
    return f"{algo.upper()} (sparse)" if label == "sparse" else "dense"


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


Series = list[tuple[str, str, list[dict[str, Any]]]]  # (label, algo, rows) per model


def _marker(rows: list[Any]) -> dict[str, Any]:
    """A marker for a line of fewer than two points, which would not be drawn otherwise."""
    return {"marker": "o"} if len(rows) < 2 else {}


def figure_learning_curves(series: Series):
    """Accuracy and loss (train dashed, test solid) per epoch for each ``(label, algo, rows)``."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, algo, rows in series:
        ep = [r["epoch"] for r in rows]
        style = {**_STYLE.get(label, {}), **_marker(rows)}
        for ax, key in zip(axes, ("acc", "loss"), strict=True):
            ax.plot(ep, [r[f"test_{key}"] for r in rows], **style, label=f"{_label(label, algo)} test")
            ax.plot(ep, [r[f"train_{key}"] for r in rows], **style, ls="--", alpha=0.7,
                    label=f"{_label(label, algo)} train")
    axes[0].set(title="Accuracy", xlabel="epoch", ylabel="accuracy")
    axes[1].set(title="Loss", xlabel="epoch", ylabel="loss")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def plot_learning_curves(series: Series, path: Path) -> Path:
    """:func:`figure_learning_curves`, saved to ``path``."""
    return _save(figure_learning_curves(series), path)


def neurons_change(series: Series) -> bool:
    """Whether any model's hidden neurons (all, or active) change over its epochs."""
    return any(len({(r.get("neurons"), r.get("active_neurons")) for r in rows}) > 1 for _, _, rows in series)


def figure_connections(series: Series):
    """Connections per epoch (log scale; a line per model, labelled with its final count) and, when they change
    (:func:`neurons_change`), hidden neurons (all and active) in a second panel."""
    plt = _pyplot()
    panels = 2 if neurons_change(series) else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels + (1 if panels == 1 else 0), 4), squeeze=False)
    axes = axes[0]
    for label, algo, rows in series:
        ep = [r["epoch"] for r in rows]
        style = _STYLE.get(label, {})
        last = f" ({rows[-1]['connections']:,} at the end)" if rows else ""
        axes[0].plot(ep, [r["connections"] for r in rows], **style, marker=".", label=_label(label, algo) + last)
        if panels == 2:
            axes[1].plot(ep, [r.get("neurons") for r in rows], **style, ls="--", label=f"{_label(label, algo)}: all")
            axes[1].plot(ep, [r.get("active_neurons") for r in rows], **style, marker=".",
                         label=f"{_label(label, algo)}: active (≥1 input and output connection)")
    axes[0].set(title="Connections", xlabel="epoch", ylabel="connections", yscale="log")
    if panels == 2:
        axes[1].set(title="Hidden neurons", xlabel="epoch", ylabel="neurons")
        axes[1].set_ylim(bottom=0)
    else:
        neurons = [f"{_label(label, algo)} {rows[-1].get('active_neurons')}/{rows[-1].get('neurons')}"
                   for label, algo, rows in series if rows]
        # two lines, the models' counts wrapped: one line of them runs past the figure's right edge
        counts = textwrap.fill(", ".join(neurons), width=60)
        axes[0].set_title(f"Connections\nactive hidden neurons, constant: {counts}", fontsize=10)
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    return fig


def plot_connections(series: Series, path: Path) -> Path:
    """:func:`figure_connections`, saved to ``path``."""
    return _save(figure_connections(series), path)


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 4)
    return math.ceil(n / cols), cols


def _layer_name(j: int, layer: Any) -> str:
    return f"layer {j + 1}: {layer.in_features}→{layer.out_features}"


def figure_degrees(layers: list[tuple[str, Any]], model: str = "model"):
    """In-degree histogram of each layer's output neurons; ``model`` names the model and epoch in the title."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    rows, cols = _grid(len(layers))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    for j, (ax, (_, layer)) in enumerate(zip(axes.flat, layers, strict=False)):
        fan_in = degrees(layer)[0].numpy()
        lo, hi = (int(fan_in.min()), int(fan_in.max())) if fan_in.size else (0, 0)
        bins = np.arange(lo, hi + 2) - 0.5 if hi - lo < 60 else np.linspace(lo, hi + 1, 41)
        ax.hist(fan_in, bins=bins, color="C0")
        ax.ticklabel_format(useOffset=False, style="plain", axis="x")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
        if hi == lo:
            ax.set_xlim(lo - 3, hi + 3)
        ax.set_title(f"{_layer_name(j, layer)}, {fan_in.size} neurons", fontsize=9)
        ax.set_xlabel("in-degree (connections into a neuron)", fontsize=8)
        ax.set_ylabel("neurons", fontsize=8)
        ax.axvline(float(fan_in.mean()), color="k", ls=":", lw=1)
    for ax in list(axes.flat)[len(layers):]:
        ax.axis("off")
    fig.suptitle(f"In-degree distributions of the {model} (dotted: mean)", fontsize=10)
    return fig


def plot_degrees(layers: list[tuple[str, Any]], path: Path, model: str = "model") -> Path:
    """:func:`figure_degrees`, saved to ``path``."""
    return _save(figure_degrees(layers, model), path)


def plot_input_connectivity(snapshots: list[tuple[int, np.ndarray]], path: Path) -> Path:
    """Connections per input feature at a few epochs: images when the input is square-ish, else lines."""
    plt = _pyplot()
    n = snapshots[0][1].size
    shape = image_shape(n)
    k = len(snapshots)
    if shape is None:
        fig, ax = plt.subplots(figsize=(10, 3.5))
        for epoch, deg in snapshots:
            ax.plot(deg, lw=0.8, label=f"epoch {epoch}")
        ax.set(xlabel="input feature", ylabel="connections kept", title="Input-layer connectivity")
        ax.legend(fontsize=8)
        return _save(fig, path)
    fig, axes = plt.subplots(1, k, figsize=(3.3 * k + 0.6, 3.3), squeeze=False)
    vmax = max(float(d.max()) for _, d in snapshots)
    vmin = min(float(d.min()) for _, d in snapshots)
    if vmax <= vmin:
        vmin, vmax = vmin - 1, vmax + 1
    im = None
    for ax, (epoch, deg) in zip(axes.flat, snapshots, strict=True):
        img = deg.reshape(shape)
        if img.ndim == 3:
            img = img.sum(0) / img.shape[0]
        im = ax.imshow(img, cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(f"epoch {epoch}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes.flat), shrink=0.85, label="connections per input feature")
    fig.suptitle("Input-layer connectivity", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def figure_weights(series: list[tuple[str, list[tuple[str, Any]]]], when: str = ""):
    """Histogram (density-normalised) of each layer's weights, sparse and dense overlaid; ``when`` (e.g.
    ``"epoch 50"``) goes into the title."""
    plt = _pyplot()
    n = max(len(layers) for _, layers in series)
    rows, cols = _grid(n)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    for label, layers in series:
        for j, (ax, (_, layer)) in enumerate(zip(axes.flat, layers, strict=False)):
            w = layer_weights(layer).double().numpy()
            ax.hist(w, bins=60, density=True, alpha=0.55, color=_STYLE.get(label, {}).get("color"),
                    label=f"{label} ({w.size} weights)")
            ax.set_title(_layer_name(j, layer), fontsize=9)
            ax.set_xlabel("weight", fontsize=8)
            ax.set_ylabel("probability density", fontsize=8)
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"Weight distributions{f' at {when}' if when else ''} (each histogram normalised to area 1)",
                 fontsize=10)
    return fig


def plot_weights(series: list[tuple[str, list[tuple[str, Any]]]], path: Path, when: str = "") -> Path:
    """:func:`figure_weights`, saved to ``path``."""
    return _save(figure_weights(series, when), path)


def pick_snapshots(snapshots: list[tuple[int, np.ndarray]], k: int = 4) -> list[tuple[int, np.ndarray]]:
    """Up to ``k`` of ``(epoch, degrees)`` snapshots at evenly spaced *epochs* (the first, the last, and those
    nearest the epochs in between), not evenly spaced list positions."""
    if len(snapshots) <= k:
        return snapshots
    epochs = np.array([e for e, _ in snapshots], dtype=float)
    chosen: list[int] = []
    for target in np.linspace(epochs[0], epochs[-1], k):
        free = [i for i in range(len(snapshots)) if i not in chosen]
        chosen.append(min(free, key=lambda i: (abs(epochs[i] - target), i)))
    return [snapshots[i] for i in sorted(chosen)]


def report(run_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """Write the plots of a run into ``out`` (default ``RUN/plots``); returns their paths."""
    models = runs_in(run_dir)
    out_dir = Path(out) if out is not None else Path(run_dir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    curves, weights, written = [], [], []
    main_layers = None
    snapshots: list[tuple[int, np.ndarray]] = []
    main_name = when = ""
    for label, d in models:
        config, session, ck = load_model(d)
        rows = read_metrics(d)
        curves.append((label, config.algo, rows))
        layers = weight_layers(session.model)
        weights.append((label, layers))
        if main_layers is None:
            main_layers = layers
            when = f"epoch {int(ck['epoch'])}"
            main_name = f"{_label(label, config.algo)} model at {when}"
            snapshots = [(r["epoch"], np.asarray(r["input_degree"])) for r in rows if r.get("input_degree")]
            final = degrees(layers[0][1])[1].numpy()
            last = int(ck["epoch"])
            if not snapshots or snapshots[-1][0] != last:
                snapshots.append((last, final))
            snapshots = pick_snapshots(snapshots)
    assert main_layers is not None
    if any(rows for _, _, rows in curves):
        written.append(plot_learning_curves(curves, out_dir / PLOTS[0]))
        written.append(plot_connections(curves, out_dir / PLOTS[1]))
    written.append(plot_degrees(main_layers, out_dir / PLOTS[2], main_name))
    written.append(plot_input_connectivity(snapshots, out_dir / PLOTS[3]))
    written.append(plot_weights(weights, out_dir / PLOTS[4], when))
    return written
