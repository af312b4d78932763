"""RL run directories, metrics, checkpoints and deterministic evaluation.

A run directory (the format every sparta run shares, :mod:`sparta.rundir`) holds::

    config.json     {"algo": ..., "config": {...agent settings..., "sparsity": {...}}}
    metrics.jsonl   one JSON object per line: {"kind": "episode", "step", "return", "length", "fps", "density", ...}
                    and {"kind": "eval", "step", "return", "returns", "density", ...}
    checkpoint.pt   networks, optimizers, topology algorithms, replay buffer, RNG states, counters; written
                    atomically when the run starts, at the first episode boundary after every ``checkpoint_every``
                    steps, and at the end
    summary.json    final evaluation, written when the run completes

Checkpoints are taken at episode boundaries (the environment's internal state is not saved): episodes are
reset with ``seed + episode_index``, so a resumed run is bit-identical to an uninterrupted one (same seed,
thread count). The checkpoint written at the very end may be mid-episode; extending a finished run with more
steps starts a fresh episode there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparta.rl.sparsity import schedule_warnings
from sparta.rundir import (
    CHECKPOINT,
    CONFIG,
    GRID_ALGOS,
    METRICS_JSONL,
    RL_FORMAT,
    SUMMARY,
    RunError,
    check_run,
    prepare_run_dir,
)
from sparta.rundir.checkpoint import load_checkpoint as _load_checkpoint
from sparta.rundir.checkpoint import save_checkpoint
from sparta.rundir.files import append_metrics, read_json, read_metrics, write_json, write_metrics

METRICS = METRICS_JSONL
CHECKPOINT_FORMAT = RL_FORMAT

__all__ = ["CHECKPOINT", "CONFIG", "METRICS", "SUMMARY", "Run", "RunError", "eval_envs", "eval_row", "evaluate",
           "find_runs", "load_checkpoint", "read_config", "read_metrics", "restore_network", "summarize"]


def read_config(run_dir: str | Path, kind: str = "rl") -> dict[str, Any]:
    """``{"algo": ..., "config": {...}}`` of an agent run directory: ``kind`` ``"rl"`` (``sparta rl train``) or
    ``"grid"`` (``sparta grid train``, the same format); another kind of run is a one-line :class:`RunError`
    naming the commands that take it."""
    p = Path(run_dir) / CONFIG
    if not p.is_file():
        raise RunError(f"{run_dir} is not an RL run directory (no {CONFIG}); start one with `sparta rl train`")
    check_run(run_dir, f"sparta {kind} train --out DIR", kind=kind)
    saved = read_json(p)
    if not isinstance(saved, dict) or "algo" not in saved or "config" not in saved:
        raise RunError(f"{p} is not the config of an RL run (runs are written by `sparta rl train`)")
    return saved


def find_runs(path: str | Path) -> list[Path]:
    """``path`` itself if it is a run, else the runs directly or two levels below it (sorted)."""
    p = Path(path)
    if (p / CONFIG).is_file():
        return [p]
    if not p.is_dir():
        raise RunError(f"RL run directory {p} does not exist")
    found = sorted({c.parent for pattern in (f"*/{CONFIG}", f"*/*/{CONFIG}") for c in p.glob(pattern)})
    if not found:
        raise RunError(f"no RL run found in {p} (looked for {CONFIG} in it and in its sub-folders)")
    return found


def load_checkpoint(run_dir: str | Path, purpose: str = "the run cannot resume from it") -> dict[str, Any]:
    """A run's checkpoint, read only; one-line :class:`RunError` when missing or damaged."""
    return _load_checkpoint(run_dir, (CHECKPOINT_FORMAT,), "sparta RL", purpose)


MIN_GRADIENT_STEPS = 1000  # fewer, and an agent learns next to nothing: the run warns


class BudgetWarning(UserWarning):
    """A run whose step budget leaves its agent or its sparse method very little room (the CLI prints these)."""


def check_budget(algo: str, cfg: Any, steps: dict[str, int]) -> list[str]:
    """Refuse (``ValueError``) a run whose ``cfg.total_steps`` leaves no gradient step, or no room for GMP to
    prune; return one warning per thing that leaves very little room. ``steps``: gradient steps each network
    (``"q"``, ``"critics"``, ``"actor"``) takes over the whole run."""
    every = getattr(cfg, "train_frequency", 1)
    learns = f"{algo.upper()} takes its first gradient step after learning_starts = {cfg.learning_starts} environment " \
             f"steps" + (f", then one every train_frequency = {every}" if every > 1 else "")
    need = cfg.learning_starts + MIN_GRADIENT_STEPS * every
    fix = f"give --steps {need} or more, or lower --set learning_starts=N"
    if max(steps.values()) < 1:
        raise ValueError(f"--steps {cfg.total_steps} leaves {algo.upper()} no gradient step: {learns}; {fix}")
    out = []
    if max(steps.values()) < MIN_GRADIENT_STEPS:
        out.append(f"--steps {cfg.total_steps} leaves {algo.upper()} only {max(steps.values())} gradient steps "
                   f"({learns}): it will barely learn; {fix}")
    nets: dict[tuple[str, int], list[str]] = {}  # one line per finding, naming every network it applies to
    for net, n in steps.items():
        try:
            found = schedule_warnings(cfg.sparsity, n)
        except ValueError as e:
            raise ValueError(f"{e} (the {net} takes {n} gradient steps: {learns})") from None
        for w in found:
            nets.setdefault((w, n), []).append(net)
    return out + [f"method {cfg.sparsity.method!r} on the {' and '.join(names)} ({n} gradient steps): {w}; give more "
                  f"--steps" for (w, n), names in nets.items()]


class Run:
    """Writes one run directory (or nothing when ``run_dir`` is None)."""

    def __init__(self, run_dir: str | Path | None, algo: str, config: dict[str, Any], *, resume: bool = False,
                 overwrite: bool = False, quiet: bool = True, total_steps: int = 0) -> None:
        self.dir = None if run_dir is None else Path(run_dir)
        self.quiet, self.total_steps = quiet, total_steps
        self.t0, self.step0, self.last_print = time.perf_counter(), 0, 0.0
        self.last: dict[str, Any] = {}
        if self.dir is None:
            return
        if resume:
            saved = read_config(self.dir, kind="grid" if algo in GRID_ALGOS else "rl")
            if saved["algo"] != algo:
                raise RunError(f"{self.dir} is a {saved['algo']} run, not {algo}")
            load_checkpoint(self.dir)  # present and readable, before anything is written
        else:
            prepare_run_dir(self.dir, overwrite, resume_command="sparta rl train --resume")
        write_json(self.dir / CONFIG, {"algo": algo, "config": config})

    # --------------------------------------------------------------- metrics
    def log(self, row: dict[str, Any]) -> None:
        if row.get("kind") == "episode":
            self.last.update({k: row[k] for k in ("return", "density") if k in row})
        elif row.get("kind") == "eval":
            self.last["eval"] = row["return"]
        if self.dir is not None:
            append_metrics(self.dir, row)
        if row.get("kind") == "eval" and not self.quiet:
            print(f"\r[eval] step {row['step']}: return {row['return']:.1f} ± {row['return_std']:.1f} "
                  f"(density {row['density']:.3f})".ljust(100), flush=True)

    def fps(self, step: int) -> float:
        return (step - self.step0) / max(time.perf_counter() - self.t0, 1e-9)

    def progress(self, step: int) -> None:
        """A one-line progress bar (steps, last episodic return, FPS, density), at most 4 times a second."""
        if self.quiet:
            return
        now = time.perf_counter()
        if now - self.last_print < 0.25 and step < self.total_steps:
            return
        self.last_print = now
        frac = step / max(self.total_steps, 1)
        bar = "#" * int(24 * frac)
        ret = self.last.get("return")
        print(f"\r[{bar:<24}] {step}/{self.total_steps} return {'-' if ret is None else f'{ret:.1f}'} "
              f"fps {self.fps(step):.0f} density {self.last.get('density', 1.0):.3f}", end="", flush=True)

    # ----------------------------------------------------------- checkpoints
    def save(self, state: dict[str, Any]) -> None:
        if self.dir is not None:
            save_checkpoint(self.dir, state, CHECKPOINT_FORMAT)

    def load(self) -> dict[str, Any]:
        """The checkpoint; metrics rows written after it (an interrupted run) are dropped."""
        assert self.dir is not None
        ck = load_checkpoint(self.dir)
        write_metrics(self.dir, [r for r in read_metrics(self.dir) if r["step"] <= ck["step"]])
        self.step0 = ck["step"]
        return ck

    def finish(self, summary: dict[str, Any]) -> None:
        if not self.quiet:
            print()
        if self.dir is not None:
            write_json(self.dir / SUMMARY, summary)


EVAL_ENVS = 16  # environment copies an evaluation steps in lockstep (one batched forward pass per step)


def eval_envs(env_id: str, episodes: int) -> list[Any]:
    """``min(episodes, EVAL_ENVS)`` copies of ``env_id`` for :func:`evaluate`."""
    from sparta.rl.envs import make_env

    return [make_env(env_id) for _ in range(max(1, min(episodes, EVAL_ENVS)))]


@torch.no_grad()
def evaluate(envs: Sequence[Any], policy: Callable[[np.ndarray], np.ndarray], episodes: int,
             seed: int) -> list[float]:
    """Returns of ``episodes`` episodes with the deterministic ``policy``, run ``len(envs)`` at a time in lockstep.

    ``policy`` maps a batch of observations ``(k, *obs_shape)`` to ``k`` actions, so every step of the running
    episodes costs one forward pass. Episode ``i`` is reset with seed ``seed + i`` (whichever copy runs it), so
    evaluations are comparable and do not touch the training RNGs. A finished copy is not stepped again until it
    starts the next episode. The returns equal those of one episode at a time up to the floating-point effect of
    batching on the policy's arithmetic (none for ``SparseLinear`` layers, whose rows are summed the same way
    at any batch size; dense layers may differ in the last bits).
    """
    if not envs:
        raise ValueError("evaluate needs at least one environment")
    returns = [0.0] * episodes
    running: dict[int, tuple[Any, Any]] = {}  # episode index → (env, current observation)
    free, next_episode = list(envs), 0
    while next_episode < episodes or running:
        while free and next_episode < episodes:
            env = free.pop()
            running[next_episode] = (env, env.reset(seed=seed + next_episode)[0])
            next_episode += 1
        ids = list(running)
        actions = policy(np.stack([running[i][1] for i in ids]))
        for i, action in zip(ids, actions, strict=True):
            env = running[i][0]
            obs, r, term, trunc, _ = env.step(action)
            returns[i] += float(r)
            if term or trunc:
                del running[i]
                free.append(env)
            else:
                running[i] = (env, obs)
    return returns


def eval_row(step: int, returns: list[float], density: float, **extra: Any) -> dict[str, Any]:
    return {"kind": "eval", "step": step, "return": float(np.mean(returns)), "return_std": float(np.std(returns)),
            "returns": [float(r) for r in returns], "density": density, **extra}


def summarize(run: Run, algo: str, cfg: Any, step: int, final: list[float], nets: list[torch.nn.Module],
              t_start: float, *envs: Any) -> dict[str, Any]:
    """Write a finished run's summary (final evaluation, density and size of ``nets``), close ``envs``,
    and return the summary."""
    from sparta.topology.layers import connection_count

    counts = [connection_count(n) for n in nets]
    nnz, total = sum(c[0] for c in counts), sum(c[1] for c in counts)
    summary = {"algo": algo, "env_id": cfg.env_id, "method": cfg.sparsity.method, "step": step,
               "eval_return": float(np.mean(final)), "eval_returns": final, "density": nnz / total, "nnz": nnz,
               "dense_size": total, "params": sum(p.numel() for n in nets for p in n.parameters()),
               "seconds": time.perf_counter() - t_start}
    run.finish(summary)
    for env in envs:
        env.close()
    return summary


def restore_network(run_dir: str | Path, config_cls: type, build: Callable[..., dict[str, Any]], net: str,
                    algo: str) -> tuple[torch.nn.Module, Any, Any]:
    """Rebuild an agent from a run directory's config and load network ``net`` (and its topology
    algorithm ``algo``, first: it restores layer types and sizes) from the checkpoint.

    Returns ``(network, env, config)``.
    """
    from sparta.rl.envs import make_env

    cfg = config_cls(**read_config(run_dir)["config"])
    env = make_env(cfg.env_id)
    nets = build(cfg, env)
    ck = load_checkpoint(run_dir, "the run's policy cannot be loaded")
    if nets[algo] is not None:
        nets[algo].load_state_dict(ck[algo])
    nets[net].load_state_dict(ck[net])
    return nets[net], env, cfg
