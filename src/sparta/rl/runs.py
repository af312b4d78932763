"""RL run directories, metrics, checkpoints and deterministic evaluation.

A run directory holds::

    config.json     {"algo": ..., "config": {...agent settings..., "sparsity": {...}}}
    metrics.jsonl   one JSON object per line: {"kind": "episode", "step", "return", "length", "fps", "density", ...}
                    and {"kind": "eval", "step", "return", "returns", "density", ...}
    checkpoint.pt   networks, optimizers, topology algorithms, replay buffer, RNG states, counters; written
                    atomically (sparta.train.runs.atomic_write_bytes) at the first episode boundary after every
                    ``checkpoint_every`` steps, and at the end
    summary.json    final evaluation, written when the run completes

Checkpoints are taken at episode boundaries (the environment's internal state is not saved): episodes are
reset with ``seed + episode_index``, so a resumed run is bit-identical to an uninterrupted one (same seed,
thread count). The checkpoint written at the very end may be mid-episode; extending a finished run with more
steps starts a fresh episode there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparta.train.runs import atomic_write_bytes, atomic_write_text

CONFIG, METRICS, CHECKPOINT, SUMMARY = "config.json", "metrics.jsonl", "checkpoint.pt", "summary.json"
CHECKPOINT_FORMAT = "sparta-rl-2"  # 2: networks are SparseMLP modules


class RunError(ValueError):
    """A run directory that is missing, incomplete, or not what the command expects."""


def read_metrics(run_dir: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl`` (of one ``kind`` if given); a truncated last line is ignored."""
    p = Path(run_dir) / METRICS
    rows = []
    if p.is_file():
        for line in p.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            if kind is None or row.get("kind") == kind:
                rows.append(row)
    return rows


def read_config(run_dir: str | Path) -> dict[str, Any]:
    p = Path(run_dir) / CONFIG
    if not p.is_file():
        raise RunError(f"{run_dir} is not an RL run directory (no {CONFIG}); start one with `sparta rl train`")
    return json.loads(p.read_text())


def find_runs(path: str | Path) -> list[Path]:
    """``path`` itself if it is a run, else the runs directly or two levels below it (sorted)."""
    p = Path(path)
    if (p / CONFIG).is_file():
        return [p]
    found = sorted({c.parent for pattern in (f"*/{CONFIG}", f"*/*/{CONFIG}") for c in p.glob(pattern)})
    if not found:
        raise RunError(f"no RL run found in {p} (looked for {CONFIG} in it and in its sub-folders)")
    return found


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
            saved = read_config(self.dir)
            if saved["algo"] != algo:
                raise RunError(f"{self.dir} is a {saved['algo']} run, not {algo}")
        else:
            if (self.dir / CONFIG).exists() and not overwrite:
                raise RunError(f"{self.dir} already holds a run; resume it with --resume, or pass --overwrite")
            self.dir.mkdir(parents=True, exist_ok=True)
            for name in (METRICS, CHECKPOINT, SUMMARY):
                (self.dir / name).unlink(missing_ok=True)
        atomic_write_text(self.dir / CONFIG, json.dumps({"algo": algo, "config": config}, indent=2) + "\n")

    # --------------------------------------------------------------- metrics
    def log(self, row: dict[str, Any]) -> None:
        if row.get("kind") == "episode":
            self.last.update({k: row[k] for k in ("return", "density") if k in row})
        elif row.get("kind") == "eval":
            self.last["eval"] = row["return"]
        if self.dir is not None:
            with open(self.dir / METRICS, "a") as f:
                f.write(json.dumps(row) + "\n")
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
        if self.dir is None:
            return
        state = {"format": CHECKPOINT_FORMAT, **state}
        atomic_write_bytes(self.dir / CHECKPOINT, lambda f: torch.save(state, f))

    def load(self) -> dict[str, Any]:
        """The checkpoint; metrics rows written after it (an interrupted run) are dropped."""
        assert self.dir is not None
        p = self.dir / CHECKPOINT
        if not p.is_file():
            raise RunError(f"no checkpoint in {self.dir}; nothing to resume")
        ck = torch.load(p, map_location="cpu", weights_only=True)
        if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
            raise RunError(f"{p} is not a sparta RL checkpoint ({CHECKPOINT_FORMAT})")
        rows = [r for r in read_metrics(self.dir) if r["step"] <= ck["step"]]
        atomic_write_text(self.dir / METRICS, "".join(json.dumps(r) + "\n" for r in rows))
        self.step0 = ck["step"]
        return ck

    def finish(self, summary: dict[str, Any]) -> None:
        if not self.quiet:
            print()
        if self.dir is not None:
            atomic_write_text(self.dir / SUMMARY, json.dumps(summary, indent=2) + "\n")


def load_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """A run's checkpoint, read only."""
    p = Path(run_dir) / CHECKPOINT
    if not p.is_file():
        raise RunError(f"no checkpoint in {run_dir}; was the run started with `sparta rl train`?")
    ck = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"{p} is not a sparta RL checkpoint ({CHECKPOINT_FORMAT})")
    return ck


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
    ck = load_checkpoint(run_dir)
    if nets[algo] is not None:
        nets[algo].load_state_dict(ck[algo])
    nets[net].load_state_dict(ck[net])
    return nets[net], env, cfg
