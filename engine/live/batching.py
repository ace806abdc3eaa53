"""Batching network evaluations of concurrent sessions into one call.

Sessions run their sampling in their own threads; each network call goes through a shared
:class:`BatchedNetwork`, which gathers the calls that arrive within a short window (or until every
active session has asked) and, for those with equal shapes, makes one call on all their clips.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch

from ..models.conditioning import Conditioning
from ..sampling.denoiser import NetworkFn


@dataclass(eq=False)
class _Request:
    x: torch.Tensor
    c_noise: torch.Tensor
    cond: Conditioning
    num_frames: int
    done: threading.Event = field(default_factory=threading.Event)
    result: torch.Tensor | None = None
    error: BaseException | None = None

    @property
    def key(self) -> tuple:
        vec = None if self.cond.vector is None else tuple(self.cond.vector.shape[1:])
        return (
            self.num_frames,
            tuple(self.x.shape[1:]),
            self.x.dtype,
            tuple(self.cond.concat.shape[1:]),
            tuple(self.cond.crossattn.shape[1:]),
            vec,
        )


class BatchedNetwork:
    """Thread-safe :class:`NetworkFn` that merges concurrent calls of equal shape."""

    def __init__(self, network: NetworkFn, window_seconds: float = 0.01, max_clips: int = 64) -> None:
        self.network = network
        self.window = window_seconds
        self.max_clips = max_clips
        self.participants = 1
        """How many threads may call concurrently (active sessions); a batch waits for them."""
        self.calls = 0
        self.clips = 0
        self._pending: list[_Request] = []
        self._cv = threading.Condition()
        self._leader = False

    def __call__(self, x: torch.Tensor, c_noise: torch.Tensor, cond: Conditioning, num_frames: int) -> torch.Tensor:
        req = _Request(x, c_noise, cond, num_frames)
        with self._cv:
            self._pending.append(req)
            self._cv.notify_all()
            lead = not self._leader
            if lead:
                self._leader = True
        if lead:
            self._lead(req)
        req.done.wait()
        if req.error is not None:
            raise req.error
        assert req.result is not None
        return req.result

    def _lead(self, first: _Request) -> None:
        """Gather the calls matching ``first``'s shapes, then run them as one batch."""
        with self._cv:
            key = first.key
            self._cv.wait_for(lambda: self._count(key) >= self.participants, timeout=self.window)
            batch = [r for r in self._pending if r.key == key][: self.max_clips]
            taken = {id(r) for r in batch}
            self._pending = [r for r in self._pending if id(r) not in taken]
            self._leader = bool(self._pending)
            if self._pending:  # other shapes are waiting: a new leader gathers them
                threading.Thread(target=self._lead, args=(self._pending[0],), daemon=True).start()
        self._run(batch)

    def _count(self, key: tuple) -> int:
        return sum(1 for r in self._pending if r.key == key)

    def _run(self, batch: list[_Request]) -> None:
        try:
            x = torch.cat([r.x for r in batch])
            c_noise = torch.cat([r.c_noise for r in batch])
            cond = Conditioning.cat([r.cond for r in batch])
            out = self.network(x, c_noise, cond, batch[0].num_frames)
            self.calls += 1
            self.clips += cond.num_clips
            start = 0
            for r in batch:
                rows = r.x.shape[0]
                r.result = out[start : start + rows]
                start += rows
        except BaseException as exc:  # delivered to every waiting caller
            for r in batch:
                r.error = exc
        finally:
            for r in batch:
                r.done.set()
