"""What training a sparse MLP holds in memory, estimated before anything is allocated.

The estimate follows what :class:`~sparta.nn.SparseMLP` and :mod:`sparta.optim` keep (see "Memory" in
docs/guides/fast.md): per connection the value, the int32 column index, the gradient, the optimizer state
and, with ``transpose="csc"``, the transposed copy; per row/column the pointers; per sample and unit the
stored activation and what backward needs of it; plus the data set. :func:`check_fits` turns it into a
clear refusal before a network that cannot fit is built, against the smallest of what the machine has available
(``MemAvailable``), what the process's ``RLIMIT_AS``/``RLIMIT_DATA`` leave and what its memory cgroup (a
container's cap) leaves: :func:`headroom`, which names the limit that binds. :class:`PeakRSS` measures what a block of code
really added to the process's peak resident memory (benchmarks and allocation tests).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

GB = 1e9


@dataclass(frozen=True)
class Estimate:
    """Bytes a training run holds, by part (``total`` is their sum)."""

    connections: int
    structure: int  # values, indices, row pointers, and the transposed copy when there is one
    training: int  # gradients and optimizer state
    activations: int  # per-batch buffers (activations, derivative codes, output-gradient rows)
    data: int  # the data set's tensors
    updates: int = 0  # transients of a topology update of the largest sparse layer (the run's peak above training)

    @property
    def total(self) -> int:
        return self.structure + self.training + self.activations + self.data + self.updates

    def describe(self) -> str:
        """The total and its parts in GB, as the memory refusal prints them."""
        return (f"{self.total / GB:.1f} GB ({self.connections:,} connections: structure {self.structure / GB:.2f} GB, "
                f"gradients and optimizer state {self.training / GB:.2f} GB; activations {self.activations / GB:.2f} "
                f"GB; data {self.data / GB:.2f} GB; topology updates {self.updates / GB:.2f} GB)")


def connections(sizes: Sequence[int], densities: Sequence[float]) -> list[int]:
    """Connections of each layer ``sizes[j] → sizes[j+1]`` at ``densities[j]`` (as ``SparseLinear`` rounds them)."""
    from sparta.nn.init import nnz_for

    return [nnz_for(d, a, b) for d, a, b in zip(densities, sizes[:-1], sizes[1:], strict=True)]


def estimate(sizes: Sequence[int], densities: Sequence[float], batch: int, *, transpose: str | None = "csc",
             optimizer_state: int = 1, leaky: bool = True, eval_batch: int | None = None,
             data_elements: int = 0, value_bytes: int = 4, fused_update: bool = False,
             half: bool = False) -> Estimate:
    """Bytes to train an MLP ``sizes`` at per-layer ``densities`` with minibatches of ``batch``.

    ``transpose``: ``"csc"`` (a transposed copy of each layer's structure), ``"scatter"`` (none) or None
    (dense weight matrices: no indices); ``optimizer_state``: tensors per connection (SGD with momentum 1,
    Adam 2, plain SGD 0); ``leaky``: ReLU/All-ReLU (a one-byte code per stored activation) or tanh/sigmoid
    (a float); ``eval_batch``: the evaluation batch, if larger than ``batch``; ``data_elements``: floats in
    the data set; ``fused_update``: the network is stepped by ``SparseMLP.train_step(..., keep_grad=False)``
    with a :mod:`sparta.optim` optimizer (as ``sparta train`` steps it), so from
    :data:`~sparta.nn.mlp.FUSED_UPDATE_CONNECTIONS` connections no value gradient is stored and the batch is
    laid out layer by layer (rounded up to :data:`~sparta.kernels.fused.LD_MULTIPLE` samples, not to tiles);
    ``half``: a ``SparseMLP(activation_storage="bfloat16")``, which stores its hidden activations in 2 bytes,
    with ``"csc"`` its output gradients too, and always runs layer by layer. Layer by layer with ``"csc"``, the
    hidden layers' value gradients pass through a scratch of the largest one's and each hidden layer keeps an
    inverse permutation of its CSC copy (4 bytes per connection).
    """
    from sparta.kernels.fused import T, leading_dim
    from sparta.nn.mlp import FUSED_UPDATE_CONNECTIONS, LAYER_MODE_CONNECTIONS

    nnz = connections(sizes, densities)
    total = sum(nnz)
    rows = sum(sizes[1:]) + len(nnz)
    cols = sum(sizes[:-1]) + len(nnz)
    if transpose is None:
        structure = total * value_bytes
    else:
        structure = total * (value_bytes + 4) + rows * 8 + (total * 8 + cols * 8 if transpose == "csc" else 0)
    half = half and transpose is not None
    layered = fused_update and transpose is not None and (total >= FUSED_UPDATE_CONNECTIONS or half)
    grad = 0 if layered else 1  # the update inside the backward: no value gradient (the biases' stays)
    training = total * value_bytes * (grad + optimizer_state) + rows * value_bytes * (1 + optimizer_state)
    if transpose == "csc" and len(nnz) > 1 and (layered or total >= LAYER_MODE_CONNECTIONS or half):
        # layer by layer, hidden layers take their value gradients in one pass over the CSC copy: a scratch of
        # the largest one's, and each one's inverse permutation (uint32 per connection) to bring them back
        training += max(nnz[1:]) * value_bytes
        structure += sum(nnz[1:]) * 4
    # samples per stored feature: the batch rounded up to whole tiles of fused.T where the batch-split layout
    # may hold it, else (layer by layer: training with the fused update, evaluation of networks in layer mode)
    # to LD_MULTIPLE
    eval_layered = transpose is not None and (total >= LAYER_MODE_CONNECTIONS or half)
    ld = max(leading_dim(batch) if layered or half else -(-batch // T) * T,
             0 if eval_batch is None else leading_dim(eval_batch) if eval_layered else -(-eval_batch // T) * T)
    hidden = sum(sizes[1:-1])
    stored = 2 if half else value_bytes  # bytes per hidden activation
    # two output-gradient buffers of the widest layer; with bfloat16 storage and gathers, bfloat16 ones (the float
    # pair then only ever holds the output layer's gradient: the rest of it is never touched, so never resident)
    grads = 2 * max(sizes) * 2 + sizes[-1] * value_bytes if half and transpose == "csc" else 2 * max(sizes) * value_bytes
    per_sample = ((sizes[0] + sizes[-1]) * value_bytes + hidden * (stored + (1 if leaky else value_bytes))
                  + grads + sizes[0] * value_bytes)
    updates = 0 if transpose is None else UPDATE_BYTES_PER_CONNECTION * max(nnz)
    return Estimate(total, structure, training, ld * per_sample, data_elements * 4, updates)


# SET/GMP update transients per connection of the layer updated: measured ≤ 15 for SET and ~24 for GMP since
# topology edits run inside the layer's arrays (tests/topology/test_allocation.py); 40 leaves room for the
# allocator's slack, and the estimate must not under-count what refuses a network
UPDATE_BYTES_PER_CONNECTION = 40
BIG_NETWORK_CONNECTIONS = 1 << 22  # from here on, training runs call return_freed_memory()


def return_freed_memory(threshold: int = 1 << 20) -> bool:
    """Have glibc serve allocations of ``threshold`` bytes or more with their own mappings, which go back to
    the system when freed (``mallopt(M_MMAP_THRESHOLD)``; this also stops glibc from raising the threshold
    after such frees). Otherwise the transients of building a big network (tens of bytes per connection)
    stay in the heap and count in the process's memory for the whole run. Returns whether it applied
    (False off glibc). The price: a fresh mapping's page faults for each such allocation, small next to
    the work on data that size."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, int(threshold)))  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def available_bytes() -> int | None:
    """Memory the system can give this process now (``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


# RLIMIT_* of the process, the /proc/self/status field that counts against it, and how the refusal names it
RLIMITS = {"address space": ("RLIMIT_AS", "VmSize", "the process's address-space limit (ulimit -v)"),
           "data": ("RLIMIT_DATA", "VmData", "the process's data-segment limit (ulimit -d)")}


def rlimit_headroom(kind: str = "address space") -> int | None:
    """Bytes the process may still map under its ``RLIMIT_AS`` (``kind="address space"``) or ``RLIMIT_DATA``
    (``"data"``) soft limit: the limit minus what ``/proc/self/status`` says the process holds against it
    (``VmSize``, ``VmData``); None where the limit is unlimited or unknown."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    name, field, _ = RLIMITS[kind]
    soft, _hard = resource.getrlimit(getattr(resource, name))
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    used = proc_status_kib(field)
    return max(0, soft - max(0, used) * 1024)


_V1_UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as the largest page multiple below 2^63


def _cgroup_dirs(cgroup_file: str, mountinfo: str) -> list[tuple[Path, int]]:
    """The memory cgroup directories of this process, deepest first, each with its version (1 or 2): its own
    cgroup and every ancestor up to the root of the mount that shows it (a parent's limit binds too)."""
    try:
        lines = Path(cgroup_file).read_text().splitlines()
        mounts = Path(mountinfo).read_text().splitlines()
    except OSError:
        return []
    paths: dict[int, str] = {}
    for line in lines:  # "hierarchy-id:controllers:path"; v2's single line is "0::path"
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            paths.setdefault(2, parts[2])
        elif "memory" in parts[1].split(","):
            paths[1] = parts[2]
    out: list[tuple[Path, int]] = []
    for version in (1, 2):
        if version not in paths:
            continue
        for m in mounts:  # "id parent major:minor root mountpoint options ... - fstype source super-options"
            left, sep, right = m.partition(" - ")
            fields, tail = left.split(), right.split()
            if not sep or len(fields) < 5 or len(tail) < 3:
                continue
            fstype, opts = tail[0], tail[2].split(",")
            if not (version == 2 and fstype == "cgroup2" or version == 1 and fstype == "cgroup" and "memory" in opts):
                continue
            root, point = fields[3], Path(fields[4])
            rel = os.path.relpath(paths[version], root) if paths[version].startswith(root) else "."
            d = (point / rel).resolve() if rel != "." else point
            if not d.is_dir():  # a namespaced mount shows only the process's own cgroup, at its root
                d = point
            while True:
                out.append((d, version))
                if d == point or point not in d.parents:
                    break
                d = d.parent
            break
    return out


def cgroup_headroom(cgroup_file: str = "/proc/self/cgroup",
                    mountinfo: str = "/proc/self/mountinfo") -> tuple[int, str] | None:
    """Bytes the process's memory cgroup (a container's cap) still allows: the smallest limit minus usage over its
    cgroup and their ancestors (v2 ``memory.max`` − ``memory.current``, v1 ``memory.limit_in_bytes`` −
    ``memory.usage_in_bytes``), with the name of the limit's file; None where no limit is set or readable."""
    best: tuple[int, str] | None = None
    for d, version in _cgroup_dirs(cgroup_file, mountinfo):
        limit_file, usage_file = ("memory.max", "memory.current") if version == 2 else \
            ("memory.limit_in_bytes", "memory.usage_in_bytes")
        try:
            limit_text = (d / limit_file).read_text().strip()
            usage = int((d / usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max":
            continue
        try:
            limit = int(limit_text)
        except ValueError:
            continue
        if limit >= _V1_UNLIMITED:
            continue
        room = max(0, limit - usage)
        if best is None or room < best[0]:
            best = (room, limit_file)
    return best


@dataclass(frozen=True)
class Headroom:
    """Memory this process may still allocate under the limit that binds first.

    ``source``: ``"available"`` (the machine's ``MemAvailable``), ``"address space"`` (``RLIMIT_AS``), ``"data"``
    (``RLIMIT_DATA``) or ``"cgroup"`` (the container's memory limit; ``limit_file`` names it)."""

    bytes: int
    source: str
    limit_file: str = ""

    def describe(self) -> str:
        """The refusal's words, e.g. ``the process's address-space limit (ulimit -v) leaves 1.9 GB``."""
        size = f"{self.bytes / GB:.1f} GB"
        if self.source == "available":
            return f"this machine has {size} available"
        if self.source == "cgroup":
            return f"the container's memory limit (cgroup {self.limit_file}) leaves {size}"
        return f"{RLIMITS[self.source][2]} leaves {size}"


def headroom(available: Callable[[], int | None] | None = None,
             rlimit: Callable[[str], int | None] | None = None,
             cgroup: Callable[[], tuple[int, str] | None] | None = None) -> Headroom | None:
    """The smallest of what the machine has available, what the process's ``RLIMIT_AS``/``RLIMIT_DATA`` leave and
    what its memory cgroup leaves; None where none is known. Each source can be replaced (tests); by default
    :func:`available_bytes`, :func:`rlimit_headroom` and :func:`cgroup_headroom`."""
    available = available or available_bytes
    rlimit = rlimit or rlimit_headroom
    cgroup = cgroup or cgroup_headroom
    found: list[Headroom] = []
    free = available()
    if free is not None:
        found.append(Headroom(int(free), "available"))
    for kind in RLIMITS:
        room = rlimit(kind)
        if room is not None:
            found.append(Headroom(int(room), kind))
    cg = cgroup()
    if cg is not None:
        found.append(Headroom(int(cg[0]), "cgroup", cg[1]))
    return min(found, key=lambda h: h.bytes) if found else None


class TooLarge(ValueError):
    """A network would not fit in the memory this process may use (raised before allocating it)."""


FIT_MARGIN = 0.9  # the share of the available memory a run may plan to hold


def check_fits(est: Estimate, what: str = "this network", margin: float = FIT_MARGIN) -> None:
    """Raise :class:`TooLarge` with the estimate and the binding limit (:func:`headroom`) when ``est`` exceeds
    ``margin`` of it."""
    room = headroom()
    if room is not None and est.total > margin * room.bytes:
        raise TooLarge(f"{what} needs about {est.describe()} to train, but {room.describe()}; use fewer or narrower "
                       "hidden layers, a smaller epsilon or density, a smaller batch, or fewer samples")


# ------------------------------------------------------------------- measuring


def proc_status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM`` …); -1 where unavailable."""
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.MULTILINE)
    except OSError:
        return -1
    return int(m.group(1)) if m else -1


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` (peak RSS) to the current RSS (Linux ≥ 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    hwm, rss = proc_status_kib("VmHWM"), proc_status_kib("VmRSS")
    return 0 <= hwm <= rss + 1024  # took effect (1 MiB slack for RSS moving in between)


class PeakRSS:
    """Context manager: peak RSS increase (bytes) over the RSS at entry.

    Uses the kernel's high-water mark after resetting it; where that cannot be reset, polls ``VmRSS``
    every millisecond from a thread (which can miss a short-lived peak).
    """

    def __init__(self) -> None:
        self.base_kib = 0
        self.peak_kib = 0
        self._poll: threading.Thread | None = None
        self._stop = threading.Event()
        self.method = ""

    def __enter__(self) -> PeakRSS:
        self.base_kib = proc_status_kib("VmRSS")
        if reset_peak_rss():
            self.method = "VmHWM reset via /proc/self/clear_refs"
        else:
            self.method = "VmRSS polled every 1 ms"
            self.peak_kib = self.base_kib
            self._poll = threading.Thread(target=self._run, daemon=True)
            self._poll.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, proc_status_kib("VmRSS"))
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        if self._poll is not None:
            self._stop.set()
            self._poll.join()
        else:
            self.peak_kib = proc_status_kib("VmHWM")

    @property
    def extra_bytes(self) -> int:
        return max(0, self.peak_kib - self.base_kib) * 1024
