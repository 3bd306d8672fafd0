"""The cost model's quantities: what a step costs on one machine (`Curve`, `Timing`), what the
target accepts of a draft (`Acceptance`), and one predicted configuration (`Prediction`).
The formulas that combine them are in engine.costmodel.formulas."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import DEFAULT_PREFETCH


@dataclass(frozen=True)
class Curve:
    """Seconds vs tokens: piecewise linear through measured points, extrapolated by the last
    segment's slope (never below the last value), constant below the first point."""

    tokens: tuple[float, ...]
    seconds: tuple[float, ...]

    @classmethod
    def linear(cls, fixed: float, per_token: float) -> Curve:
        """fixed + per_token * n."""
        return cls((1.0, 2.0), (fixed + per_token, fixed + 2 * per_token))

    def __call__(self, n: float) -> float:
        xs, ys = self.tokens, self.seconds
        if len(xs) == 1 or n <= xs[0]:
            return ys[0]
        for i in range(1, len(xs)):
            if n <= xs[i]:
                f = (n - xs[i - 1]) / (xs[i] - xs[i - 1])
                return ys[i - 1] + f * (ys[i] - ys[i - 1])
        slope = max(0.0, (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]))
        return ys[-1] + slope * (n - xs[-1])

    def scaled(self, factor: float) -> Curve:
        return Curve(self.tokens, tuple(s * factor for s in self.seconds))


@dataclass(frozen=True)
class Timing:
    """What one step costs on one machine for one pair (seconds, bytes)."""

    draft_forward: Curve  # d(m): one draft forward over m tokens
    layer_compute: Curve  # c(n): one target layer over n tokens
    head_compute: Curve  # h(n): target embedding + final norm + LM head over n tokens
    layer_bytes: tuple[int, ...]  # per target layer, as stored
    base_bytes: int  # embeddings, final norm, head: always resident
    read_bandwidth: float  # B: bytes/s of a streamed layer read, page cache bypassed
    step_overhead: float = 0.0  # o_step of an ar step: Python (acceptance, caches, events)
    node_overhead: float = 0.0  # o_node: per tree node
    chain_overhead: float | None = None  # o_step of chain / tree steps (None: step_overhead):
    tree_overhead: float | None = None  # sampling, masks and bookkeeping differ by mode
    chain_draft_scale: float = 1.0  # chain draft seconds / d-curve prediction, measured in situ
    prefetch: int = DEFAULT_PREFETCH  # layers the IO thread may hold ready ahead of compute
    cold_read_bandwidth: float = 0.0  # a layer read alone (B is measured under load)

    def overhead(self, mode: str) -> float:
        by_mode = {"chain": self.chain_overhead, "tree": self.tree_overhead}.get(mode)
        return self.step_overhead if by_mode is None else by_mode

    @property
    def num_layers(self) -> int:
        return len(self.layer_bytes)

    @property
    def target_bytes(self) -> int:
        return self.base_bytes + sum(self.layer_bytes)

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if not isinstance(v, Curve | tuple)}
        for k in ("draft_forward", "layer_compute", "head_compute"):
            c = getattr(self, k)
            d[k] = {"tokens": list(c.tokens), "seconds": list(c.seconds)}
        d["num_layers"] = self.num_layers
        d["layer_bytes_mean"] = sum(self.layer_bytes) / max(1, self.num_layers)
        return d


@dataclass(frozen=True)
class Acceptance:
    """What the target accepts of the draft's proposals (one pair, one sampling setting)."""

    chain_alpha: tuple[float, ...]  # alpha_d = P(depth d accepted | depth d-1 accepted)
    tree_tokens: tuple[float, ...]  # E(N) for N = 1, 2, ... (tree_tokens[0] = 1)
    start_tokens_tree: float = 1.5  # s for tree steps
    start_tokens_chain: float = 1.5  # s for chain steps
    reuse: float = 0.0  # P_reuse of (5)
    extension: float = 1.0  # P(the pipeline has work: the most probable leaf was not expanded)
    calibration: tuple[tuple[float, float, float], ...] = ()  # (path prob, accept rate, nodes)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Prediction:
    mode: str  # "ar", "chain", "tree" (an auto tree may answer "ar")
    nodes: int  # N (ar: 1, chain: k + 1)
    tokens_per_pass: float
    draft_seconds: float
    pass_seconds: float
    overhead_seconds: float
    hidden_seconds: float  # draft time hidden in IO waits by the pipeline, (5)
    step_seconds: float
    tokens_per_second: float
    io_seconds: float
    wait_seconds: float
    bytes_read_per_token: float
    streamed_layers: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)
