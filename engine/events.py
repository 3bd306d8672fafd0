"""The one contract between the engine and everything else (GUI, CLI, benchmark, tests).

The decode loop (`engine.decoding.generate.generate`) yields these frozen events in this order:
`PrefillDone`, then one `StepEvent` per target pass, then exactly one of `Finished` / `Failed`.
Loading (`engine.formats.loader`) reports `LoadProgress`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class LoadProgress:
    what: str  # a person-readable label, e.g. "target layers"
    done: int
    total: int


@dataclass(frozen=True)
class PrefillDone:
    tokens: int  # prompt tokens processed
    seconds: float


@dataclass(frozen=True)
class StepEvent:
    """One target pass.

    The tree's node 0 is the root: the last committed token, which the target had not yet seen.
    `tree_parents[i] < i`, root's parent is -1. `accepted` lists node indices of the accepted
    path starting with 0; `bonus_token` is the target's own token after the last accepted node
    (None when generation stopped inside the path, e.g. EOS or max tokens).
    In `ar` mode the tree is just the root.
    """

    index: int
    mode: str
    tree_tokens: tuple[int, ...]
    tree_parents: tuple[int, ...]
    tree_probs: tuple[float, ...]  # draft probability of each node given its parent (root 1.0)
    tree_depths: tuple[int, ...]  # each node's depth (root 0)
    tree_path_probs: tuple[float, ...]  # draft probability of the path root..node (root 1.0)
    tree_texts: tuple[str, ...]  # each node's token as text; () unless config.tree_texts
    accepted: tuple[int, ...]
    bonus_token: int | None
    token_ids: tuple[int, ...]  # tokens emitted this step, in order
    from_draft: tuple[bool, ...]  # per emitted token: drafted and accepted (True) or target's own
    token_texts: tuple[str, ...]  # per emitted token, the text it completed ("" while a
    # multi-byte character is incomplete); "".join(token_texts) == text
    text: str  # emitted text delta
    draft_seconds: float = 0.0
    verify_seconds: float = 0.0
    io_wait_seconds: float = 0.0
    bytes_read: int = 0
    target_resident_bytes: int = 0
    layers_pinned: int = 0
    layers_streamed: int = 0
    threshold: float = 0.0  # the drafter's fallback threshold used for this step
    # who proposed each node (TokenTree.sources): "root", "draft", "prompt", "ngram", "jacobi"
    tree_sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stats:
    """Totals of one generation. `to_dict()` gives the JSON form (snake_case keys).

    Decode figures (`target_bytes_read`, `..._per_token`, `io_wait_seconds`) are the sums over
    the StepEvents; what the streamed target read while prefilling is under `prefill_*`.
    `acceptance_by_depth` is engine.decoding.stats.DepthAcceptance's definition.
    """

    mode: str
    prompt_tokens: int
    generated_tokens: int
    target_passes: int
    tokens_per_pass: float
    tokens_per_second: float
    prefill_seconds: float
    decode_seconds: float
    time_to_first_token: float  # = ttft_seconds: generate() called -> first token's event
    acceptance_by_depth: tuple[float, ...]  # [d - 1]: P(accept depth d | could), d = 1..
    draft_tokens_proposed: int = 0
    draft_tokens_accepted: int = 0
    draft_seconds: float = 0.0
    verify_seconds: float = 0.0
    peak_target_resident_bytes: int = 0
    target_bytes_read: int = 0
    target_bytes_read_per_token: float = 0.0
    io_wait_seconds: float = 0.0
    prefill_target_bytes_read: int = 0
    prefill_io_wait_seconds: float = 0.0
    peak_rss_bytes: int = 0  # the process's OS high-water mark (ru_maxrss), not our accounting
    extra: dict = field(default_factory=dict)

    @property
    def ttft_seconds(self) -> float:
        """Time to first token: from the call (before prefill) to the first emitted token's
        StepEvent; the benchmark's mlx-lm figure is measured the same way."""
        return self.time_to_first_token

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ttft_seconds"] = self.time_to_first_token
        d["acceptance_by_depth"] = list(self.acceptance_by_depth)
        d.update(d.pop("extra"))
        return d


@dataclass(frozen=True)
class Finished:
    reason: str  # "eos" | "length" | "cancelled"
    text: str
    token_ids: tuple[int, ...]
    stats: Stats


@dataclass(frozen=True)
class Failed:
    message: str  # for a person: what went wrong and what to do


Event = LoadProgress | PrefillDone | StepEvent | Finished | Failed
