"""What a training command prints around a run, one implementation for ``sparta train`` (one process or
``--workers N``) and ``python -m sparta.parallel``: the header (run, data, model, training settings, notes and
warnings) and the summary (the result table, its notes, the commands that inspect the run).

The lines are built from the run's :class:`~sparta.train.config.RunConfig`; what only WASAP-SGD knows (its
``parallel:`` line and its Importance Pruning schedule) is passed in by :mod:`sparta.parallel.console`. The
data-level formatting (percentages, counts, tables, the progress display) is :mod:`sparta.console`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparta.console import percent, short_speed_note, summary_table
from sparta.rundir import CHECKPOINT, RunError
from sparta.train.config import RunConfig
from sparta.train.data import Dataset
from sparta.train.plan import dense_layer_note, gmp_distribution, schedule_warnings, target_density
from sparta.train.session import DENSE_DIR, load_checkpoint


def checkpoint_epochs(out: str | Path, workers: int | None) -> str:
    """Where a run restarts from: ``epoch 6``, or ``epoch 6 (dense: epoch 5)`` when its dense twin's checkpoint is
    elsewhere; empty when it has no readable checkpoint."""
    out = Path(out)
    epochs = []
    for d, w in ((out, workers), (out / DENSE_DIR, None)):
        if (d / CHECKPOINT).is_file():
            try:
                epochs.append(int(load_checkpoint(d, workers=w)["epoch"]))
            except RunError:
                pass
    if not epochs:
        return ""
    return f"epoch {epochs[0]}" + (f" (dense: epoch {epochs[1]})" if len(epochs) > 1 and epochs[1] != epochs[0] else "")


def model_description(config: RunConfig, sizes: list[int]) -> str:
    """The ``model:`` line's text: ``64-1000-10 allrelu α=0.6, SET (epsilon 20, zeta 0.3; 5.37% of the
    connections), vs dense``."""
    if config.algo == "dense":
        what = "dense"
    elif config.nm is not None:  # N:M runs (issue 33): the pattern and the layer densities
        from sparta.train.nm import describe

        what = describe(config, sizes)
    else:
        sparsity = f"density {config.density:g}" if config.density is not None else f"epsilon {config.epsilon:g}"
        if config.algo == "gmp":
            sparsity += f", pruned {gmp_distribution(config)}"
        elif config.algo in ("set", "rigl"):
            sparsity += f", zeta {config.zeta:g}"
        what = f"{config.algo.upper()} ({sparsity}; {percent(target_density(config, sizes))} of the connections)"
        if config.activation_storage != "float32":
            what += f", {config.activation_storage} activations"
    alpha = f" α={config.alpha:g}" if config.activation == "allrelu" else ""
    vs = ", vs dense" if config.compare_dense and config.algo != "dense" else ""
    return f"{'-'.join(map(str, sizes))} {config.activation}{alpha}, {what}{vs}"


def threads_description(config: RunConfig) -> str:
    """``1 thread(s) per process`` (WASAP-SGD: each process's), or the count this process trains with (sparse
    models: sparta's workers, torch itself kept at one; read after :func:`sparta.rundir.runtime.set_threads`)."""
    if config.workers:
        return f"{config.threads or 1} thread(s) per process"
    from sparta.kernels.threads import get_num_threads

    n = get_num_threads()
    return f"{n} thread{'s' if n > 1 else ''}"


def header(config: RunConfig, data: Dataset, out: str | Path, sizes: list[int], *, resume: bool = False,
           parallel: str | None = None, warnings: list[str] | None = None) -> list[str]:
    """The lines printed before training, in order: ``run:`` (or ``resuming: … from epoch N``), ``data:``,
    ``model:``, ``parallel:`` (when given: WASAP-SGD's set-up), ``training:``, then ``note:`` and ``warning:`` lines.

    ``sizes``: the layer sizes ``[features, *hidden, outputs]``; ``warnings``: what the schedule leaves too little
    room for (None: :func:`sparta.train.plan.schedule_warnings` of ``config``; WASAP-SGD passes its own, since its
    server prunes in phase 1 only). A new kind of setting adds its line or its part of a line here.
    """
    lr = f"lr {config.lr:g}" + (f" (x {config.lr_fan_in:g}/fan-in where fan-in > {config.lr_fan_in:g})"
                                if config.lr_fan_in is not None else "")
    lines = [f"resuming: {out} from {checkpoint_epochs(out, config.workers)} of {config.epochs} (its last checkpoint)"
             if resume else f"run: {out}",
             f"data: {data.name}, {len(data.x_train)} train / {len(data.x_test)} test samples, {data.n_features} "
             f"features, {data.n_classes} classes",
             f"model: {model_description(config, sizes)}"]
    if parallel is not None:
        lines.append(f"parallel: {parallel}")
    lines.append(f"training: {config.epochs} epochs, batch {config.batch_size}, {config.optimizer} {lr}, "
                 f"seed {config.seed}, {threads_description(config)}")
    note = dense_layer_note(config, sizes)
    if note:
        lines.append(f"note: {note}")
    if warnings is None:
        warnings = schedule_warnings(config, len(data.x_train))
    lines += [f"warning: {w}" for w in warnings]
    return lines


def summary(summaries: list[dict[str, Any]], config: RunConfig, sizes: list[int], out: str | Path, wall: float,
            finished: bool = True) -> list[str]:
    """The lines printed after training: a blank line, the result table of ``summaries`` (each model's
    ``summary.json``; the dense twin's gives the "vs dense" columns), its notes, a blank line, and the commands
    that inspect the run (``finished``) or the one that continues it."""
    lines = ["", summary_table(summaries)]
    lines += [f"note: {n}" for n in (dense_layer_note(config, sizes), short_speed_note(summaries)) if n]
    lines.append("")
    if finished:
        lines += [f"done in {wall:.1f} s. run: {out}",
                  f"  sparta eval {out}      # test metrics of the saved model(s)",
                  f"  sparta report {out}    # plots: learning curves, connections, degrees, input connectivity"]
    else:
        lines.append(f"stopped after {wall:.1f} s. continue with: sparta train --resume {out}")
    return lines
