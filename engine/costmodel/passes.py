"""One target pass in the cost model: seconds, waits and bytes read (engine.costmodel.formulas).

Target pass over n tokens; L layers, c(n) seconds of compute per layer, h(n) for embedding,
final norm and head. Resident: T_pass = L c(n) + h(n). Streamed (budget below the model): the
layer store pins the first p layers and reads the other S every pass, layer j in
r_j = bytes_j / B seconds (B: storage bandwidth, page cache bypassed), on an IO thread that runs
ahead of compute by at most `prefetch` ready layers, and holds at most `slots` streamed layers
(read, ready or in use) at once: slots = (budget - resident bytes) // layer bytes. A two-stage
pipeline with a bounded buffer:

    start_j = max(io_free, taken_{j-prefetch}, done_{j-slots}),  ready_j = start_j + r_j
    io_free = ready_j,  taken_j = max(t, ready_j),  done_j = t = taken_j + c(n)          (4)

starting from t = p c(n) and io_free = -slack: the IO thread began this pass's first layers as
soon as compute took the previous pass's last one, `slack` = c + h + overheads + T_draft earlier
(released it c later). With slots = 1 nothing overlaps: T_pass = S (r + c) + p c + h.
Waits = sum(taken_j - t_j); T_pass = t_end + h(n). IO time per pass = sum r_j; bytes read per
token = sum bytes_j / E(N).

Pipeline (draft work while the target waits for a layer, decoding/pipeline.py): at a wait,
compute runs whole draft forwards that grow the *next* step's tree (assuming this tree's most
probable path and the guessed bonus are accepted): the leaf of that path if the draft did not
expand it (probability P_ext), the guessed bonus, then batches of w nodes (rules.
wait_forward_sizes). One more forward runs while it fits: it ends before the IO thread runs out
of reads it may start without compute (rules.wait_work_fits, the live policy's own rule):

    at take_j: while t < ready_j and wait_work_fits(facts(t), d(m_calls)): t += d(m_calls)  (4')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import rules

if TYPE_CHECKING:
    from .quantities import Timing


@dataclass(frozen=True)
class PassTime:
    seconds: float  # T_pass
    compute: float  # L c(n) + h(n)
    io: float  # sum r_j (IO thread busy)
    waits: float  # compute blocked on a layer
    bytes_read: int
    streamed: int  # S
    pinned: int  # p
    hook_calls: int = 0  # draft forwards run during waits (pipeline)
    hook_seconds: float = 0.0  # ... and their seconds


def layout(timing: Timing, budget_bytes: int | None) -> tuple[int, list[int]]:
    """(pinned layer count p, streamed layer indices) the layer store uses for this budget."""
    n = timing.num_layers
    if budget_bytes is None or budget_bytes >= timing.target_bytes:
        return n, []
    from ..streaming.layerstore import plan_pinned  # the store's own plan (imports MLX)

    pinned = plan_pinned(timing.base_bytes, list(timing.layer_bytes), budget_bytes, timing.prefetch)
    return len(pinned), [i for i in range(n) if i >= len(pinned)]


def pass_seconds(
    timing: Timing,
    n: int,
    budget_bytes: int | None,
    slack: float,
    wait_work: Sequence[float] = (),
    trace: list | None = None,
) -> PassTime:
    """One target pass over n tokens, recurrence (4); `wait_work`: seconds of each draft forward
    the pipeline may run at waits, in order (4'); `trace` collects (WaitFacts, ran) per decision."""
    c, h = timing.layer_compute(n), timing.head_compute(n)
    pinned, streamed = layout(timing, budget_bytes)
    compute = timing.num_layers * c + h
    if not streamed:
        return PassTime(compute, compute, 0.0, 0.0, 0, 0, pinned)
    bw = timing.read_bandwidth
    reads = [timing.layer_bytes[j] / bw for j in streamed]
    resident = timing.base_bytes + sum(timing.layer_bytes[:pinned])
    slots = max(1, (budget_bytes - resident) // max(timing.layer_bytes[j] for j in streamed))
    q = timing.prefetch
    t, io_free, waits = pinned * c, -slack, 0.0
    calls, hook_s = 0, 0.0
    taken: list[float] = []
    for j, r in enumerate(reads):
        queue_room = taken[j - q] if j >= q else -slack
        # for j < slots: the previous pass's layer S + j - slots, released about one layer
        # period max(c, r) apart, the last one c after its take at -slack
        period = max(c, r)
        budget_room = taken[j - slots] + c if j >= slots else -slack + c - (slots - 1 - j) * period
        start = max(io_free, queue_room, budget_room)
        io_free = start + r
        nbytes = timing.layer_bytes[streamed[j]]
        while wait_work and t < io_free:
            started = t >= start
            room = rules.room_bytes(budget_bytes, resident + nbytes * started, q, nbytes)
            facts = rules.WaitFacts(streamed[j], nbytes, t - start if started else None, room, bw)
            work = wait_work[calls] if calls < len(wait_work) else None
            ran = rules.wait_work_fits(facts, work, calls, len(wait_work))
            if trace is not None:
                trace.append((facts, ran))
            if not ran:
                break
            t += work
            hook_s += work
            calls += 1
        got = max(t, io_free)
        waits += got - t
        taken.append(got)
        t = got + c
    nbytes = sum(timing.layer_bytes[j] for j in streamed)
    return PassTime(t + h, compute, sum(reads), waits, nbytes, len(streamed), pinned, calls, hook_s)
