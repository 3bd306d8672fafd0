"""The layer store of a streamed target: one IO thread, a bounded queue, a hard byte budget.

The IO thread reads the streamed layers in order, cyclically (it runs ahead into the next pass),
and evaluates what it reads on its own thread (MLX streams are per thread), so compute only ever
receives evaluated arrays. A layer's bytes count against the budget from the moment its read
starts until compute releases it; the IO thread waits while the next read would cross the
budget or `prefetch` layers are already waiting. Compute waits with a timeout loop that checks
the IO thread is alive, so an IO error is raised as StreamingError, never a hang; a read
that takes longer than `read_timeout` (stuck storage) ends the pass the same way. The stuck
thread is abandoned (a blocked read cannot be interrupted): a new epoch starts with the next
pass, and the old thread exits without touching the store when its read returns. While
compute waits, the store reports facts (engine.costmodel.rules.WaitFacts) to a hook that
decides whether to do draft work (the policy's decision, not the store's).
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx

from ..config import DEFAULT_PREFETCH, DEFAULT_READ_TIMEOUT
from ..costmodel.rules import WaitFacts, room_bytes
from ..errors import StreamingError
from ..runtime import MLXJob, run_on_mlx_thread
from .weights import ReadCancelled, WeightIndex, plan_reads, read_tensors

WAIT_POLL = 0.05  # seconds between checks that the IO thread is still alive
_LIVE: weakref.WeakSet = weakref.WeakSet()


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


@dataclass(frozen=True)
class IOStats:
    """Snapshot of a streamed target. Counters are cumulative since load."""

    bytes_read: int  # by the IO thread (streamed layers only)
    io_seconds: float  # IO thread busy reading + materializing
    io_wait_seconds: float  # compute blocked waiting for a layer (not counting draft work)
    resident_bytes: int  # target weight bytes accounted right now
    peak_resident_bytes: int
    layers_pinned: int
    layers_streamed: int
    budget_bytes: int
    layers_read: int = 0
    passes: int = 0
    hook_seconds: float = 0.0  # compute time spent in `while_waiting` (draft work during IO)
    hook_calls: int = 0


def plan_pinned(base: int, layer_bytes: list[int], budget: int, prefetch: int) -> list[int]:
    """Layers to pin: all if they fit, else as many as leave room for (prefetch+1) layers."""
    biggest = max(layer_bytes, default=0)
    if budget < base + biggest:
        raise StreamingError(
            f"A budget of {_mb(budget)} is too small for this model: it needs at least "
            f"{_mb(base + biggest)} (embeddings, norm and head {_mb(base)} + one layer "
            f"{_mb(biggest)}). Raise the budget (--budget-mb {-(-(base + biggest) // 2**20)} "
            "or more)."
        )
    free = budget - base
    if sum(layer_bytes) <= free:
        return list(range(len(layer_bytes)))
    room = min(free, (prefetch + 1) * biggest)
    pinned, used = [], 0
    for i, n in enumerate(layer_bytes):
        if used + n > free - room:
            break
        pinned.append(i)
        used += n
    return pinned


class LayerStore:
    """The IO thread, its bounded queue of ready layers and the budget accounting."""

    def __init__(
        self,
        index: WeightIndex,
        streamed: list[int],
        base_bytes: int,
        budget: int,
        prefetch: int = DEFAULT_PREFETCH,
        bypass_cache: bool = True,
        reader: Callable[..., dict[str, mx.array]] = read_tensors,
        clock: Callable[[], float] = time.perf_counter,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
    ):
        self.index, self.streamed, self.budget = index, list(streamed), budget
        self.prefetch, self.bypass_cache, self.reader = max(1, prefetch), bypass_cache, reader
        self.runs = {i: plan_reads(index.layers[i]) for i in streamed}
        self.nbytes = {i: index.layer_bytes(i) for i in streamed}
        self._cond = threading.Condition()
        self._ready: deque[tuple[int, dict]] = deque()
        self._loading: int | None = None
        self._in_use: int | None = None
        self.base_bytes = base_bytes  # resident part + pinned layers
        self._reserved = self._peak = base_bytes
        self._error: StreamingError | None = None
        self._stop = False
        self._epoch = 0  # bumped when a stuck IO thread is abandoned; its results are dropped
        self.read_timeout = read_timeout
        self._closed = False
        self._thread: MLXJob | None = None
        self._counters = dict(bytes_read=0, io_seconds=0.0, io_wait_seconds=0.0, layers_read=0,
                              passes=0, hook_seconds=0.0, hook_calls=0)
        self.clock = clock
        self._bandwidth: float | None = None  # bytes/s of the IO thread, moving average
        self._load_start = 0.0
        _LIVE.add(self)

    # ---- IO thread -------------------------------------------------------------------------
    def start(self) -> None:
        """Start (or restart after an error or `stop`) the IO thread."""
        with self._cond:
            if self._closed:
                raise StreamingError("The streamed model was closed; load it again.")
            if not self.streamed or (self._thread is not None and self._thread.is_alive()):
                return
            self._error, self._stop = None, False
            stale, self._ready = list(self._ready), deque()
            for i, _ in stale:
                self._reserved -= self.nbytes[i]
            epoch = self._epoch
            self._thread = run_on_mlx_thread(lambda: self._run(epoch), "canopy-io")

    def _stopped(self, epoch: int) -> bool:
        return self._stop or self._epoch != epoch

    def _wait_for_room(self, i: int, epoch: int) -> bool:
        nbytes = self.nbytes[i]
        with self._cond:
            while not self._stopped(epoch) and (
                len(self._ready) >= self.prefetch or self._reserved + nbytes > self.budget
            ):
                self._cond.wait()
            if self._stopped(epoch):
                return False
            self._reserved += nbytes
            self._peak = max(self._peak, self._reserved)
            self._loading = i
            self._load_start = self.clock()
            return True

    def _run(self, epoch: int) -> None:
        # runs on a parked MLX thread (engine.runtime), which keeps its MLX stream
        pos = 0
        while True:
            i = self.streamed[pos % len(self.streamed)]
            nbytes = self.nbytes[i]
            if not self._wait_for_room(i, epoch):
                return
            t0 = self.clock()
            try:
                weights = self.reader(self.runs[i], stamps=self.index.stamps,
                                      bypass_cache=self.bypass_cache,
                                      should_stop=lambda: self._stopped(epoch))
            except BaseException as e:
                with self._cond:
                    if self._epoch != epoch:  # abandoned: the store already moved on
                        return
                    self._reserved -= nbytes
                    self._loading = None
                    if not isinstance(e, ReadCancelled):
                        self._error = _as_streaming_error(e, i, self.runs[i])
                    self._cond.notify_all()
                return
            with self._cond:
                if self._epoch != epoch:
                    return
                self._loading = None
                c = self._counters
                dt = self.clock() - t0
                c["io_seconds"] += dt
                self._bandwidth = _average(self._bandwidth, nbytes / max(dt, 1e-9))
                c["bytes_read"] += nbytes
                c["layers_read"] += 1
                if self._stop:
                    self._reserved -= nbytes
                    return
                self._ready.append((i, weights))
                self._cond.notify_all()
            del weights
            pos += 1

    # ---- compute side ----------------------------------------------------------------------
    def take(
        self, i: int, while_waiting: Callable[[WaitFacts], bool] | None = None
    ) -> dict:
        """The weights of streamed layer `i` (evaluated); call `release(i)` after use.

        While the layer is not ready, `while_waiting(facts)` may run draft work; it returns
        whether it did (False: it declines, and is not called again during this wait).
        """
        hook = while_waiting
        waited = 0.0
        wait_start = self.clock()
        try:
            while True:
                with self._cond:
                    while self._ready and self._ready[0][0] != i:  # left over from a broken pass
                        j, _ = self._ready.popleft()
                        self._reserved -= self.nbytes[j]
                        self._cond.notify_all()
                    if self._ready:
                        _, weights = self._ready.popleft()
                        self._in_use = i
                        self._cond.notify_all()
                        return weights
                    if self._error is not None:
                        raise self._error
                    self._check_read_time()
                    if self._thread is None or not self._thread.is_alive():
                        raise StreamingError(
                            "The layer reader stopped (the model was closed or cancelled) "
                            f"while layer {i} was needed."
                        )
                    if hook is None:
                        t0 = time.perf_counter()
                        self._cond.wait(WAIT_POLL)
                        waited += time.perf_counter() - t0
                        continue
                    facts = self._wait_facts(i, self.clock() - wait_start)
                t0 = time.perf_counter()
                worked = hook(facts)
                if not worked:
                    hook = None
                    continue
                with self._cond:
                    self._counters["hook_seconds"] += time.perf_counter() - t0
                    self._counters["hook_calls"] += 1
        finally:
            with self._cond:
                self._counters["io_wait_seconds"] += waited

    def _check_read_time(self) -> None:
        """Abandon a read older than `read_timeout` and raise. (Caller holds the lock.)"""
        i = self._loading
        if i is None or self.clock() - self._load_start <= self.read_timeout:
            return
        self._epoch += 1  # the thread's later results are dropped; it exits when unblocked
        self._stop, self._thread, self._loading = True, None, None
        self._reserved -= self.nbytes[i]
        for j, _ in self._ready:
            self._reserved -= self.nbytes[j]
        self._ready.clear()
        self._cond.notify_all()
        files = ", ".join(sorted({str(r.file) for r in self.runs[i]}))
        self._error = StreamingError(
            f"Reading layer {i} from {files} did not finish within {self.read_timeout:g} s: the "
            "disk or network volume is stuck or far too slow. The reader was stopped; check the "
            "storage and try again (or raise the read timeout).")
        raise self._error

    def _wait_facts(self, i: int, waited: float) -> WaitFacts:
        """What compute waiting for layer i can know (caller holds the lock)."""
        elapsed = self.clock() - self._load_start if self._loading == i else None
        room = room_bytes(self.budget, self._reserved, self.prefetch, self.nbytes[i])
        return WaitFacts(i, self.nbytes[i], elapsed, room, self._bandwidth, waited)

    def release(self, i: int) -> None:
        with self._cond:
            self._reserved -= self.nbytes[i]
            self._in_use = None
            self._cond.notify_all()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the IO thread and drop prefetched layers (`start` restarts it)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread.thread is not threading.current_thread():
            thread.join(timeout)
        with self._cond:
            for j, _ in self._ready:
                self._reserved -= self.nbytes[j]
            self._ready.clear()

    def close(self) -> None:
        self.stop()
        self._closed = True

    @property
    def io_thread(self) -> MLXJob | None:
        return self._thread

    def count_pass(self) -> None:
        with self._cond:
            self._counters["passes"] += 1

    def reset_peak(self) -> None:
        with self._cond:
            self._peak = self._reserved

    def snapshot(self, pinned: int) -> IOStats:
        with self._cond:
            return IOStats(resident_bytes=self._reserved, peak_resident_bytes=self._peak,
                           layers_pinned=pinned, layers_streamed=len(self.streamed),
                           budget_bytes=self.budget, **self._counters)

    def states(self) -> dict[int, str]:
        with self._cond:
            out = {i: "streamed" for i in self.streamed}
            out.update({j: "resident" for j, _ in self._ready})
            if self._in_use is not None:
                out[self._in_use] = "resident"
            if self._loading is not None:
                out[self._loading] = "loading"
            return out


def _average(old: float | None, new: float, weight: float = 0.3) -> float:
    return new if old is None else (1 - weight) * old + weight * new


def _as_streaming_error(e: BaseException, layer: int, runs) -> StreamingError:
    if isinstance(e, StreamingError):
        return e
    files = ", ".join(sorted({str(r.file) for r in runs}))
    return StreamingError(f"Reading layer {layer} from {files} failed: {type(e).__name__}: {e}")


@atexit.register
def _close_all() -> None:  # IO threads must release their MLX streams before exit
    for store in list(_LIVE):
        store.stop(timeout=5.0)
