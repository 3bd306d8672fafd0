"""What `canopy bench --pair coder` runs, and how many prompts fit its wall-time budget.

A 6.7 GB target at ~0.8 s per token resident and ~5 s per token streamed `ar` on a 2-core
machine: every configuration on every prompt would take hours. The run is planned in phases
(resident, then each streamed budget, then the cgroup rows), each with the same number of
prompt rounds, as many as the cost model's predicted seconds fit in the budget; streamed `ar`
runs on fewer prompts (its tokens cost most). While running, a clock compares measured with
predicted seconds: it cuts a phase short rather than overrun (never below one round), and runs
more rounds of a phase (up to one per prompt) while the run is ahead of its plan.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..config import (
    CODER_BENCH_MAX_TOKENS,
    CODER_BENCH_MINUTES,
    CODER_BENCH_TREE_NODES,
    CODER_CGROUP_LIMIT_BYTES,
)
from .runs import Config

STREAMED = ("50%", "25%")


@dataclass(frozen=True)
class CoderSpec:
    max_tokens: int = CODER_BENCH_MAX_TOKENS
    max_rounds: int = 10  # prompts per phase at most (the time budget may allow fewer)
    streamed_ar_prompts: int = 2  # streamed `ar` on at most this many of those prompts
    streamed_ar_tokens: int = 24  # and this many tokens (each costs a whole pass of reads)
    chain_k: int = 4
    tree_nodes: int = CODER_BENCH_TREE_NODES  # the fixed large tree budget
    sweep_ks: tuple[int, ...] = (2, 3, 4)  # mlx-lm num_draft_tokens tried
    sweep_tokens: int = 32
    calibration_prompts: int = 1
    calibration_tokens: int = 24
    minutes: float = CODER_BENCH_MINUTES
    cgroup_limit_bytes: int = CODER_CGROUP_LIMIT_BYTES
    quick: bool = False

    def __post_init__(self):
        for name in ("max_tokens", "max_rounds", "streamed_ar_prompts", "streamed_ar_tokens",
                     "tree_nodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, not "
                                 f"{getattr(self, name)}")
        if not self.minutes > 0:
            raise ValueError(f"--minutes must be more than 0, not {self.minutes:g}")

    @classmethod
    def quick_run(cls) -> CoderSpec:
        """Tiny models: every phase and row once or twice, in about a minute. The cgroup limit
        is above the tiny target (a Python process alone needs more): plumbing, not a kill."""
        return cls(max_tokens=8, max_rounds=2, streamed_ar_prompts=1, streamed_ar_tokens=6,
                   tree_nodes=16,
                   sweep_ks=(1, 2), sweep_tokens=8, calibration_tokens=8, minutes=10,
                   cgroup_limit_bytes=3 << 30, quick=True)


def tokens_for(spec: CoderSpec, cfg: Config) -> int:
    """New tokens of one run: streamed `ar` generates fewer (its speed per token is flat)."""
    streamed_ar = cfg.engine == "canopy" and cfg.mode == "ar" and cfg.budget != "resident"
    return min(spec.streamed_ar_tokens, spec.max_tokens) if streamed_ar else spec.max_tokens


def resident_configs(spec: CoderSpec, best_k: int) -> list[Config]:
    return [
        Config("mlx-lm", "ar", "resident", "greedy", draft="none"),
        Config("mlx-lm", "chain", "resident", "greedy", k=best_k),
        *canopy_configs(spec, "resident"),
    ]


def canopy_configs(spec: CoderSpec, budget: str) -> list[Config]:
    pipeline = budget != "resident"  # streamed: draft while layers load (the default)
    return [
        Config("canopy", "ar", budget, "greedy", draft="none"),
        Config("canopy", "chain", budget, "greedy", k=spec.chain_k),
        Config("canopy", "tree", budget, "greedy", pipeline=pipeline),
        Config("canopy", "tree", budget, "greedy", pipeline=pipeline, nodes=spec.tree_nodes),
    ]


def runs_in_round(spec: CoderSpec, configs: list[Config], i: int) -> list[Config]:
    """Round i's configurations: streamed `ar` only on the first `streamed_ar_prompts`."""
    return [c for c in configs
            if not (c.engine == "canopy" and c.mode == "ar" and c.budget != "resident"
                    and i >= spec.streamed_ar_prompts)]


def plan_rounds(round_seconds: dict[str, list[float]], available: float, fixed: float = 0.0,
                max_rounds: int = 8) -> dict[str, int]:
    """Rounds per phase: the same n everywhere (capped by each phase's list), the largest n
    whose predicted total (plus `fixed` seconds) fits in `available`, at least one; then what
    is left goes to more rounds of the phases in order (the first, resident, is cheapest)."""
    best = 1
    for n in range(2, max_rounds + 1):
        total = fixed + sum(sum(costs[:n]) for costs in round_seconds.values())
        if total > available:
            break
        best = n
    counts = {phase: min(best, len(costs)) for phase, costs in round_seconds.items()}
    total = fixed + sum(sum(c[: counts[p]]) for p, c in round_seconds.items())
    for phase, costs in round_seconds.items():
        while counts[phase] < min(max_rounds, len(costs)) and \
                total + costs[counts[phase]] <= available:
            total += costs[counts[phase]]
            counts[phase] += 1
    return counts


class Clock:
    """The run's deadline and how measured seconds compare with predicted ones so far."""

    def __init__(self, seconds: float, now=time.perf_counter):
        self.now = now
        self.start = now()
        self.deadline = self.start + seconds
        self.predicted = self.measured = 0.0

    @property
    def scale(self) -> float:
        """measured / predicted seconds so far, within [0.5, 4] (1 before any data)."""
        if self.predicted <= 0 or self.measured <= 0:
            return 1.0
        return min(4.0, max(0.5, self.measured / self.predicted))

    def observe(self, predicted: float, measured: float) -> None:
        self.predicted += predicted
        self.measured += measured

    def left(self) -> float:
        return self.deadline - self.now()

    def elapsed(self) -> float:
        return self.now() - self.start

    def affords(self, predicted: float, reserve: float = 0.0) -> bool:
        """True if `predicted` seconds (scaled by what was learned) plus the predicted
        `reserve` of later phases still end before the deadline."""
        return (predicted + reserve) * self.scale <= self.left()
