"""The memory check against every limit that binds a process: the machine's MemAvailable, the process's
RLIMIT_AS / RLIMIT_DATA (``ulimit -v`` / ``-d``) and its memory cgroup (a container's cap); and a run whose
allocation fails although the check passed."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from sparta.train import memory
from sparta.train.memory import Estimate, Headroom, TooLarge, cgroup_headroom, check_fits, headroom, rlimit_headroom

ROOT = Path(__file__).resolve().parents[2]
GB = 10**9


def est(total: int) -> Estimate:
    return Estimate(connections=1000, structure=total, training=0, activations=0, data=0)


def test_headroom_is_the_smallest_source_and_names_it():
    h = headroom(available=lambda: 20 * GB, rlimit=lambda kind: {"address space": 3 * GB, "data": 5 * GB}[kind],
                 cgroup=lambda: (8 * GB, "memory.max"))
    assert h == Headroom(3 * GB, "address space")
    assert h.describe() == "the process's address-space limit (ulimit -v) leaves 3.0 GB"
    h = headroom(available=lambda: 20 * GB, rlimit=lambda kind: None, cgroup=lambda: (int(1.5 * GB), "memory.max"))
    assert h.describe() == "the container's memory limit (cgroup memory.max) leaves 1.5 GB"
    h = headroom(available=lambda: 20 * GB, rlimit=lambda kind: 2 * GB if kind == "data" else None, cgroup=lambda: None)
    assert h.describe() == "the process's data-segment limit (ulimit -d) leaves 2.0 GB"
    assert headroom(available=lambda: 4 * GB, rlimit=lambda kind: None, cgroup=lambda: None).describe() == \
        "this machine has 4.0 GB available"
    assert headroom(available=lambda: None, rlimit=lambda kind: None, cgroup=lambda: None) is None


def test_check_fits_refuses_with_the_binding_limit(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 100 * GB)
    monkeypatch.setattr(memory, "rlimit_headroom", lambda kind: 2 * GB if kind == "address space" else None)
    monkeypatch.setattr(memory, "cgroup_headroom", lambda: (50 * GB, "memory.limit_in_bytes"))
    check_fits(est(GB))  # fits in 90 % of 2 GB
    with pytest.raises(TooLarge, match=r"needs about 3\.0 GB .* but the process's address-space limit \(ulimit -v\) "
                                       r"leaves 2\.0 GB; use fewer"):
        check_fits(est(3 * GB), "the set network 1-2-3")
    monkeypatch.setattr(memory, "cgroup_headroom", lambda: (GB, "memory.limit_in_bytes"))
    with pytest.raises(TooLarge, match=r"container's memory limit \(cgroup memory.limit_in_bytes\) leaves 1\.0 GB"):
        check_fits(est(int(1.5 * GB)))


def test_rlimit_headroom_is_the_limit_minus_what_the_process_holds(monkeypatch):
    limits = {resource.RLIMIT_AS: (6 * GB, resource.RLIM_INFINITY), resource.RLIMIT_DATA: (resource.RLIM_INFINITY,) * 2}
    monkeypatch.setattr(resource, "getrlimit", lambda which: limits[which])
    monkeypatch.setattr(memory, "proc_status_kib", lambda field: {"VmSize": 1_000_000, "VmData": 400_000}[field])
    assert rlimit_headroom("address space") == 6 * GB - 1_024_000_000
    assert rlimit_headroom("data") is None  # unlimited
    limits[resource.RLIMIT_DATA] = (GB // 4, GB // 4)
    assert rlimit_headroom("data") == 0  # already above it


def fake_cgroup(tmp_path: Path, version: int, limits: dict[str, tuple[str, int]]) -> tuple[str, str]:
    """A /proc/self/cgroup and mountinfo whose memory cgroup is ``/a/b`` under a mount in ``tmp_path``, with
    ``limits`` {relative dir: (limit text, usage)}."""
    mount = tmp_path / "cg"
    for rel, (limit, usage) in limits.items():
        d = mount / rel
        d.mkdir(parents=True, exist_ok=True)
        names = ("memory.max", "memory.current") if version == 2 else ("memory.limit_in_bytes", "memory.usage_in_bytes")
        (d / names[0]).write_text(f"{limit}\n")
        (d / names[1]).write_text(f"{usage}\n")
    (tmp_path / "cgroup").write_text("0::/a/b\n" if version == 2 else "5:memory:/a/b\n2:cpu,cpuacct:/\n0::/\n")
    fs = "cgroup2 cgroup2 rw" if version == 2 else "cgroup cgroup rw,memory"
    (tmp_path / "mountinfo").write_text(f"22 1 0:20 / /proc rw - proc proc rw\n"
                                        f"35 31 0:32 / {mount} rw,relatime - {fs}\n")
    return str(tmp_path / "cgroup"), str(tmp_path / "mountinfo")


def test_cgroup_v2_limit_minus_usage_the_tightest_ancestor_binds(tmp_path):
    files = fake_cgroup(tmp_path, 2, {"a/b": ("max", 10**8), "a": (str(3 * GB), 2 * GB), "": ("max", 0)})
    assert cgroup_headroom(*files) == (GB, "memory.max")
    files = fake_cgroup(tmp_path / "own", 2, {"a/b": (str(2 * GB), GB // 2), "a": ("max", 0)})
    assert cgroup_headroom(*files) == (int(1.5 * GB), "memory.max")


def test_cgroup_v1_limit_and_unlimited(tmp_path):
    files = fake_cgroup(tmp_path, 1, {"a/b": (str(4 * GB), 3 * GB)})
    assert cgroup_headroom(*files) == (GB, "memory.limit_in_bytes")
    files = fake_cgroup(tmp_path / "none", 1, {"a/b": ("9223372036854771712", 3 * GB)})
    assert cgroup_headroom(*files) is None  # v1's "no limit"
    assert cgroup_headroom(str(tmp_path / "missing"), str(tmp_path / "missing")) is None


def run_limited(code: str, limit: int, cwd: Path) -> subprocess.CompletedProcess:
    """``python -c code`` in ``cwd`` under an address-space limit of ``limit`` bytes (as ``prlimit --as`` sets)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}

    def limit_as() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env,
                          preexec_fn=limit_as, timeout=300, check=False)


def test_train_under_ulimit_v_is_refused_before_anything_is_written(tmp_path):
    """``prlimit --as=3000000000 sparta train --hidden 2000000 2000000 --epsilon 1`` (an estimate of 4 GB): exit 2,
    one line naming the address-space limit, no header and no run directory."""
    code = ("import sys; from sparta.cli import main; sys.exit(main(['train', '--hidden', '2000000', '2000000', "
            "'--epsilon', '1', '--epochs', '1', '--out', 'R', '-q']))")
    r = run_limited(code, 3 * GB, tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparta: error: the set network 64-2000000-2000000-10 needs about")
    assert "the process's address-space limit (ulimit -v) leaves" in lines[0]
    assert not (tmp_path / "R").exists()


def test_an_allocation_that_fails_after_the_check_is_one_line_and_leaves_nothing(tmp_path):
    """The estimate passes (the check is switched off here, as when another process takes the memory meanwhile) but
    numpy or torch cannot allocate: one line, exit 1, no traceback, no run directory left (no epoch had finished)."""
    code = ("import sys; from sparta.train import memory; memory.headroom = lambda **sources: None\n"
            "from sparta.cli import main\n"
            "sys.exit(main(['train', '--hidden', '2000000', '2000000', '--epsilon', '1', '--epochs', '1', "
            "'--out', 'R', '-q']))")
    r = run_limited(code, 3 * GB, tmp_path)
    assert r.returncode == 1, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    # numpy's "Unable to allocate …" or torch's "DefaultCPUAllocator: can't allocate memory …", whichever fails first
    assert lines[0].startswith("sparta: error: out of memory while training (") and "allocate" in lines[0]
    assert "nothing was kept" in lines[0]
    assert not (tmp_path / "R").exists()
    assert not list(tmp_path.rglob("*.tmp*")), "no temporary file left"


def test_the_train_function_checks_memory_before_creating_the_run_directory(tmp_path, monkeypatch):
    from sparta.train.config import RunConfig
    from sparta.train.runs import train

    monkeypatch.setattr(memory, "available_bytes", lambda: 2 * GB)
    monkeypatch.setattr(memory, "rlimit_headroom", lambda kind: None)
    monkeypatch.setattr(memory, "cgroup_headroom", lambda: None)
    with pytest.raises(TooLarge, match="this machine has 2.0 GB available"):
        train(RunConfig.from_dict({"hidden": [2_000_000] * 2, "epsilon": 1.0, "epochs": 1}), tmp_path / "R")
    assert not (tmp_path / "R").exists()
