"""Point-to-point messages between the server (rank 0) and the workers over ``torch.distributed``.

A message is a fixed-size int64 header — its kind, the dtype code and length of each of its 1-D tensors, and
a few integers of metadata — followed by one byte buffer holding those tensors back to back (each padded to 8
bytes), so an exchange costs two hand-offs whatever it carries. Headers travel on their own tag so the server
can take the next header from whichever worker sent one (``recv(src=None)``) and then that worker's payload.
Nothing dense is ever sent: a model is its CSR topologies (``indptr``/``indices``, only when the receiver's copy
is out of date), values and biases, a gradient its values at the connections only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import torch
import torch.distributed as dist

from sparta.parallel.state import LayerData

TAG_HEADER, TAG_DATA = 7, 8
MAX_TENSORS = 8
HEADER_LEN = 40
META_LEN = HEADER_LEN - 2 - 2 * MAX_TENSORS
DTYPES = (torch.int64, torch.int32, torch.float32, torch.float64, torch.uint8)


class Kind(IntEnum):
    """Message kinds."""

    INIT = 1  # server → worker: run settings (JSON)
    MODEL = 2  # server → worker: the model (values, biases; topology when the worker's is out of date)
    GRAD = 3  # worker → server, phase 1: gradient of one minibatch at the worker's connections
    EPOCH = 4  # worker → server, phase 2: one local epoch's statistics and, at merges, the worker's model
    DONE = 5  # server → worker: training is over


class PeerLost(RuntimeError):
    """A send or receive failed: the peer process died, closed its connection or did not answer in time.

    ``peer`` is its rank (None when gloo cannot tell: a receive from any source); ``cause`` is gloo's own words,
    shortened."""

    def __init__(self, message: str, peer: int | None = None, cause: str = "") -> None:
        super().__init__(message)
        self.peer = peer
        self.cause = cause


def gloo_cause(e: BaseException) -> str:
    """The gist of a gloo error (``Connection reset by peer``, ``Timed out waiting 20000ms for recv ...``) without
    the source location gloo puts first."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = text.rsplit("] ", 1)[-1].strip()
    return text.split(". ", 1)[0].rstrip(".")[:160]


@dataclass
class Message:
    """``kind``, up to ``META_LEN`` integers of ``meta`` and up to ``MAX_TENSORS`` 1-D ``tensors``; ``src`` is the
    sender's rank on receipt."""

    kind: Kind
    meta: list[int] = field(default_factory=list)
    tensors: list[torch.Tensor] = field(default_factory=list)
    src: int = -1


def _peer(rank: int | None) -> str:
    if rank is None:
        return "any worker"
    return "the server (rank 0)" if rank == 0 else f"worker rank {rank}"


class Link:
    """Sends and receives :class:`Message` s on the default process group and counts the bytes.

    Args:
        rank: this process's rank (for error messages).
        device: where exchanged tensors must live for the backend (``cpu`` for gloo, a CUDA device for NCCL);
            received tensors stay there.
        tags: use message tags (gloo); NCCL has none and relies on per-peer ordering.
    """

    def __init__(self, rank: int, device: torch.device | str = "cpu", tags: bool = True) -> None:
        self.rank = rank
        self.device = torch.device(device)
        self.tags = tags
        self.bytes_sent = 0
        self.bytes_received = 0
        self.pending: dict[int, list[tuple[Any, torch.Tensor]]] = {}  # dst → (work, buffer) of unfinished sends

    def _tag(self, tag: int) -> dict[str, int]:
        return {"tag": tag} if self.tags else {}

    def send(self, msg: Message, dst: int, wait: bool = True) -> None:
        """Send ``msg`` to rank ``dst``. With ``wait=False`` the transfer proceeds in the background (the sender
        goes on to other peers); the next send to ``dst``, or :meth:`flush`, waits for it first."""
        if len(msg.tensors) > MAX_TENSORS or len(msg.meta) > META_LEN:
            raise ValueError(f"a message holds at most {MAX_TENSORS} tensors and {META_LEN} meta integers, got "
                             f"{len(msg.tensors)} and {len(msg.meta)}")
        header = torch.zeros(HEADER_LEN, dtype=torch.int64)
        header[0], header[1] = int(msg.kind), len(msg.tensors)
        for i, t in enumerate(msg.tensors):
            if t.dim() != 1 or t.dtype not in DTYPES:
                raise ValueError(f"message tensors must be 1-D of {DTYPES}, got {t.dtype} {tuple(t.shape)}")
            header[2 + i] = DTYPES.index(t.dtype)
            header[2 + MAX_TENSORS + i] = t.numel()
        header[2 + 2 * MAX_TENSORS:2 + 2 * MAX_TENSORS + len(msg.meta)] = torch.tensor(msg.meta, dtype=torch.int64)
        self.flush(dst)
        buffers = [header.to(self.device)]
        payload = _pack(msg.tensors, self.device)
        if payload.numel():
            buffers.append(payload)
        try:
            for buf, tag in zip(buffers, (TAG_HEADER, TAG_DATA), strict=False):
                if wait:
                    dist.send(buf, dst, **self._tag(tag))
                else:
                    self.pending.setdefault(dst, []).append((dist.isend(buf, dst, **self._tag(tag)), buf))
                self.bytes_sent += buf.numel() * buf.element_size()
        except RuntimeError as e:
            raise PeerLost(f"rank {self.rank}: could not send {msg.kind.name} to {_peer(dst)}: {e}", dst,
                           gloo_cause(e)) from e

    def flush(self, dst: int | None = None) -> None:
        """Wait for the background sends to ``dst`` (all peers when None)."""
        for peer in [dst] if dst is not None else list(self.pending):
            try:
                for work, _ in self.pending.pop(peer, []):
                    work.wait()
            except RuntimeError as e:
                raise PeerLost(f"rank {self.rank}: a message to {_peer(peer)} was not delivered: {e}", peer,
                               gloo_cause(e)) from e

    def recv(self, src: int | None) -> Message:
        """Receive the next message from rank ``src`` (``None``: from whichever rank sends first)."""
        header = torch.zeros(HEADER_LEN, dtype=torch.int64, device=self.device)
        try:
            got = dist.recv(header, src, **self._tag(TAG_HEADER))
            got = src if got is None or got < 0 else int(got)
            header = header.cpu()
            self.bytes_received += header.numel() * 8
            specs = [(DTYPES[int(header[2 + i])], int(header[2 + MAX_TENSORS + i])) for i in range(int(header[1]))]
            payload = torch.empty(sum(_padded(d, n) for d, n in specs), dtype=torch.uint8, device=self.device)
            if payload.numel():
                dist.recv(payload, got, **self._tag(TAG_DATA))
                self.bytes_received += payload.numel()
            tensors = _unpack(payload, specs)
        except RuntimeError as e:
            if src is None:  # gloo does not tell which peer of an any-source receive went away
                raise PeerLost(f"rank {self.rank}: no message from any worker within the process-group timeout "
                               f"(gloo cannot tell which worker; the heartbeats name a lost one): {e}", None,
                               gloo_cause(e)) from e
            raise PeerLost(f"rank {self.rank}: lost contact with {_peer(src)} while waiting for a message "
                           f"(it died, exited or did not answer within the process-group timeout): {e}", src,
                           gloo_cause(e)) from e
        meta = header[2 + 2 * MAX_TENSORS:].tolist()
        return Message(Kind(int(header[0])), meta, tensors, int(got) if got is not None else -1)

    def expect(self, src: int | None, *kinds: Kind) -> Message:
        """:meth:`recv`, raising ``RuntimeError`` unless the message is one of ``kinds``."""
        msg = self.recv(src)
        if msg.kind not in kinds:
            raise RuntimeError(f"rank {self.rank}: expected {'/'.join(k.name for k in kinds)} from {_peer(msg.src)}, "
                               f"got {msg.kind.name} (the processes disagree about the schedule)")
        return msg


def _padded(dtype: torch.dtype, numel: int) -> int:
    """Bytes a tensor takes in a payload: its own, rounded up to a multiple of 8 (keeps every view aligned)."""
    return -(-numel * torch.empty(0, dtype=dtype).element_size() // 8) * 8


def _pack(tensors: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """The tensors' bytes back to back, each padded to 8 bytes: uint8 ``(Σ padded sizes,)`` on ``device``."""
    out = torch.empty(sum(_padded(t.dtype, t.numel()) for t in tensors), dtype=torch.uint8, device=device)
    at = 0
    for t in tensors:
        raw = t.detach().contiguous().view(torch.uint8)
        out[at:at + raw.numel()] = raw.to(device)
        at += _padded(t.dtype, t.numel())
    return out


def _unpack(payload: torch.Tensor, specs: Sequence[tuple[torch.dtype, int]]) -> list[torch.Tensor]:
    """Inverse of :func:`_pack`: views of ``payload`` with the given dtypes and lengths."""
    out, at = [], 0
    for dtype, numel in specs:
        size = numel * torch.empty(0, dtype=dtype).element_size()
        out.append(payload[at:at + size].view(dtype))
        at += _padded(dtype, numel)
    return out


# ------------------------------------------------------------------ payloads


def json_tensor(obj: Any) -> torch.Tensor:
    """``obj`` as JSON bytes, uint8 ``(n,)``."""
    return torch.frombuffer(bytearray(json.dumps(obj).encode()), dtype=torch.uint8).clone()


def tensor_json(t: torch.Tensor) -> Any:
    """Inverse of :func:`json_tensor`."""
    return json.loads(bytes(t.cpu().tolist()).decode())


def shapes_tensor(layers: Sequence[LayerData]) -> torch.Tensor:
    """int64 ``(3 L,)``: ``n_out, n_in, nnz`` of each layer."""
    return torch.tensor([x for d in layers for x in (d.n_out, d.n_in, d.nnz)], dtype=torch.int64)


def read_shapes(t: torch.Tensor) -> list[tuple[int, int, int]]:
    """Inverse of :func:`shapes_tensor`."""
    v = t.cpu().tolist()
    if len(v) % 3:
        raise ValueError(f"a shapes tensor holds 3 integers per layer, got {len(v)}")
    return [(v[i], v[i + 1], v[i + 2]) for i in range(0, len(v), 3)]


def model_tensors(layers: Sequence[LayerData], topology: bool) -> list[torch.Tensor]:
    """``[shapes, values and biases (Σ nnz + Σ n_out,)]`` and, with ``topology``, ``[indptrs (Σ (n_out + 1),) int64,
    indices (Σ nnz,) int32]``, each the concatenation over layers."""
    out = [shapes_tensor(layers), torch.cat([t for d in layers for t in (d.values, d.bias)])]
    if topology:
        out += [torch.cat([d.indptr for d in layers]), torch.cat([d.indices for d in layers])]
    return out


def split_values(shapes: list[tuple[int, int, int]], flat: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Split a concatenation of ``(values (nnz,), bias (n_out,))`` per layer."""
    need = sum(nnz + n_out for n_out, _, nnz in shapes)
    if flat.numel() != need:
        raise ValueError(f"expected {need} values and biases for layers {shapes}, got {flat.numel()}")
    out, at = [], 0
    for n_out, _, nnz in shapes:
        out.append((flat[at:at + nnz], flat[at + nnz:at + nnz + n_out]))
        at += nnz + n_out
    return out


def read_layers(tensors: Sequence[torch.Tensor]) -> list[LayerData]:
    """The layers of a message built by :func:`model_tensors` with its topology."""
    if len(tensors) < 4:
        raise ValueError("this message carries no topology")
    shapes = read_shapes(tensors[0])
    vals = split_values(shapes, tensors[1])
    out, p, q = [], 0, 0
    for (n_out, n_in, nnz), (v, b) in zip(shapes, vals, strict=True):
        out.append(LayerData(n_out, n_in, tensors[2][p:p + n_out + 1], tensors[3][q:q + nnz], v, b))
        p += n_out + 1
        q += nnz
    return out


def gradient_tensors(grads: Sequence[tuple[torch.Tensor, torch.Tensor]], shapes: torch.Tensor,
                     stats: Sequence[float]) -> list[torch.Tensor]:
    """``[shapes, stats (float64), gradient of values and biases (Σ nnz + Σ n_out,)]``."""
    return [shapes, torch.tensor(list(stats), dtype=torch.float64), torch.cat([t for g in grads for t in g])]
