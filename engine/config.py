"""Frozen configuration for a generation request, validated on construction.

`LIMITS` is the one statement of what each setting accepts; the dataclasses check it and the
GUI sets its spin box ranges from it, so no front end can hand the engine a setting that would
make NaN distributions or an empty tree.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields

from .errors import ConfigError

MODES = ("ar", "chain", "tree", "lookahead")
BRANCH_SOURCES = ("prompt", "ngram")  # draft-free branch sources (engine.decoding.prompt_lookup)
# A streamed target frees its layers' buffers every pass; MLX's buffer cache keeps at most this
# many of the largest layer's bytes for reuse (mx.set_cache_limit), so RSS stays near budget.
STREAM_CACHE_LAYERS = 2
# Greedy, policy at ar: the next target pass is launched before draft-free branches are known
# while fewer than this share of recent branchy steps had a branch starting with the target's
# token (the rest cost one extra pass; engine.decoding.prompt_lookup.LookupDrafter.pruned)
AHEAD_MAX_BRANCH_HITS = 0.3
AHEAD_HITS_DECAY = 0.8  # per branchy step: that share reacts within a few steps


@dataclass(frozen=True)
class Limit:
    """Allowed values of one numeric setting: low <= value (< or <=) high."""

    low: float
    high: float = math.inf
    integer: bool = False
    low_open: bool = False  # True: `low` itself is not allowed (top_p > 0)
    meaning: str = ""  # what the setting is, for the error message

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        low = f"{'>' if self.low_open else '>='} {self.low:g}"
        high = "" if math.isinf(self.high) else f" and <= {self.high:g}"
        return f"{kind} {low}{high}"

    def allows(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.integer and not isinstance(value, numbers.Integral):
            return False
        if math.isnan(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high


LIMITS: dict[str, Limit] = {
    "temperature": Limit(0.0, meaning="sampling temperature; 0 is greedy"),
    "top_p": Limit(0.0, 1.0, low_open=True, meaning="nucleus mass kept; 1 turns top-p off"),
    "seed": Limit(0, 2**63 - 1, integer=True, meaning="random seed"),
    "max_nodes": Limit(1, integer=True, meaning="tree node budget (root included)"),
    "max_depth": Limit(1, integer=True, meaning="tree depth cap"),
    "top_k": Limit(1, integer=True, meaning="children drafted per expanded node"),
    "expand_width": Limit(1, integer=True, meaning="frontier nodes expanded per draft forward"),
    "threshold": Limit(0.0, 1.0, meaning="fallback threshold on a path's draft probability"),
    "max_tokens": Limit(1, integer=True, meaning="tokens to generate"),
    "chain_length": Limit(1, integer=True, meaning="draft tokens per step in chain mode"),
    "prefill_chunk": Limit(1, integer=True, meaning="prompt tokens per prefill forward"),
    "auto_max_nodes": Limit(1, integer=True, meaning="largest node budget the auto policy uses"),
    "max_forwards": Limit(1, integer=True, meaning="draft forwards that grow one tree"),
    "verify_cost_prior": Limit(0.0, meaning="prior cost of one more verified token, in passes"),
    "prefetch": Limit(1, integer=True, meaning="streamed layers read ahead of compute"),
    "read_timeout": Limit(0.0, 24 * 3600.0, low_open=True,
                          meaning="seconds one layer read may take before the pass fails"),
}
OPTIONAL = {"seed", "verify_cost_prior"}  # None is allowed: chosen at generation time


def check_limits(config) -> None:
    """Raise ConfigError naming the first setting of `config` outside its LIMITS."""
    for f in fields(config):
        limit = LIMITS.get(f.name)
        value = getattr(config, f.name)
        if limit is None or (value is None and f.name in OPTIONAL):
            continue
        if not limit.allows(value):
            raise ConfigError(
                f"Invalid setting {f.name} = {value!r} ({limit.meaning}): it must be "
                f"{limit.describe()}."
            )


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        check_limits(self)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True)
class TreeConfig:
    """How the draft grows its token tree.

    max_nodes/max_depth are hard caps; `threshold` is the initial fallback threshold on the best
    frontier path probability (adapted online when `adaptive` is true); `top_k` children are
    added per expanded node; `expand_width` frontier nodes are expanded per draft forward.
    With `adaptive`, `auto` also lets the cost model choose the node cap per step and fall back
    to `ar` (root-only trees, occasional probes) while speculation would be slower
    (engine.costmodel.policy); `adaptive=False` keeps threshold and cap fixed. When the
    streamed target's pass is IO-bound, `auto` considers budgets up to `auto_max_nodes`; big
    trees expand wider batches so that at most `max_forwards` draft forwards grow one.
    """

    max_nodes: int = 48
    max_depth: int = 12
    top_k: int = 4
    expand_width: int = 4
    threshold: float = 0.02
    adaptive: bool = True
    auto: bool = True
    auto_max_nodes: int = 512
    max_forwards: int = 12
    verify_cost_prior: float | None = None  # None: platform_verify_cost_prior() at generation

    def __post_init__(self):
        check_limits(self)


# The auto policy's prior for the cost of verifying one more token, in one-token target passes
# (engine.costmodel.policy refits it from measured passes; the prior decides the first steps).
VERIFY_COST_PRIOR = 1 / 64  # generic: weak, the measurements decide
# Apple Silicon, resident target: fitted to published measurements (engine/costmodel/device_fit.py,
# README "Apple Silicon"): one more verified token costs about half a decode step there, so trees
# do not pay for a resident target (a streamed pass is dominated by reads: the generic prior).
APPLE_RESIDENT_VERIFY_COST = 0.54


def platform_verify_cost_prior(streamed: bool, system: str = "", machine: str = "") -> float:
    """The prior for this machine (macOS on arm64 = Apple Silicon) and target residency."""
    import platform

    system, machine = system or platform.system(), machine or platform.machine()
    apple = system == "Darwin" and machine == "arm64"
    return APPLE_RESIDENT_VERIFY_COST if apple and not streamed else VERIFY_COST_PRIOR

    def __post_init__(self):
        for name in ("max_nodes", "max_depth", "top_k", "expand_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"tree {name} must be at least 1")
        if not 0 <= self.threshold <= 1:
            raise ValueError("tree threshold must be a probability in [0, 1]")


@dataclass(frozen=True)
class LookupConfig:
    """Draft-free branches: prompt lookup and the n-gram pool (no draft model needed).

    In `tree` mode the `sources` join the draft model's tree as extra branches (or make the
    whole tree when there is no draft; an empty tuple means the draft model's tree alone).
    Prompt lookup matches the last `ngram_max`..`ngram_min` tokens against the prompt and the
    conversation so far and proposes up to `max_branches` continuations of up to
    `max_continuation` tokens (most recent match first). The n-gram pool keeps, per first
    token, up to `pool_size` n-grams of `pool_ngram` tokens harvested from the target's own
    predictions at every verified node. Extra branches add at most `max_nodes` nodes; each
    node carries `prior` as its proposal probability (for display only: acceptance uses the
    target alone). Each source's acceptance by depth is learned online starting from
    `prior ** depth`, a prompt lookup branch's first node from `match_prior` by the length of
    the match that found it (1, 2, 3 or more tokens; on both offline pairs' `ar` answers of the
    draft-free bench a 1-token match's first token held 0.22 of the time, a 2-token one's 0.48,
    a longer one's 0.84; with the four tasks weighed alike, demo pair: 0.21 / 0.46 / 0.67),
    each such kind then learning on its own; nodes whose learned acceptance falls below the
    draft policy's per-node threshold (at least `min_prob`) are not proposed. Below the draft
    model's `below_draft` most likely leaves, the best continuation of the leaf's path (prompt
    lookup, else the pool) is hung too, its nodes weighed by the leaf's path probability times
    their own.
    """

    sources: tuple[str, ...] = BRANCH_SOURCES
    ngram_min: int = 1
    ngram_max: int = 3
    max_continuation: int = 16
    max_branches: int = 5
    max_nodes: int = 40
    pool_ngram: int = 4
    pool_size: int = 8
    prior: float = 0.5
    match_prior: tuple[float, ...] = (0.2, 0.5, 0.8)
    min_prob: float = 0.01
    below_draft: int = 8  # the draft's most likely leaves continued by lookup (0: none)
    resume_steps: int = 2  # steps a copy left by the target is offered again (0: never)

    def __post_init__(self):
        unknown = set(self.sources) - set(BRANCH_SOURCES)
        if unknown:
            raise ValueError(f"unknown branch source(s) {sorted(unknown)}; "
                             f"choose from {', '.join(BRANCH_SOURCES)}")
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise ValueError("lookup n-gram sizes need 1 <= ngram_min <= ngram_max")
        for name in ("max_continuation", "max_branches", "max_nodes", "pool_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"lookup {name} must be at least 1")
        if self.below_draft < 0 or self.resume_steps < 0:
            raise ValueError("lookup below_draft and resume_steps must be at least 0")
        if self.pool_ngram < 2:
            raise ValueError("lookup pool_ngram must be at least 2")
        if not 0.0 < self.prior <= 1.0:
            raise ValueError("lookup prior must be in (0, 1]")
        if not self.match_prior or not all(0.0 < p <= 1.0 for p in self.match_prior):
            raise ValueError("lookup match_prior needs one or more values in (0, 1]")
        if not 0.0 <= self.min_prob < 1.0:
            raise ValueError("lookup min_prob must be in [0, 1)")


@dataclass(frozen=True)
class LookaheadConfig:
    """`lookahead` mode: Jacobi decoding with the target alone (Fu et al. 2024).

    A window of `window` columns by `ngram - 1` levels of guesses rides in the verified tree;
    the target's predictions on its last level refine the guesses and feed an n-gram pool
    (`pool_size` n-grams of `ngram` tokens per first token); up to `candidates` pool n-grams
    starting with the root token are verified in the same pass.
    """

    window: int = 4
    ngram: int = 3
    pool_size: int = 8
    candidates: int = 4

    def __post_init__(self):
        if self.window < 1 or self.candidates < 0 or self.pool_size < 1:
            raise ValueError("lookahead needs window >= 1, pool_size >= 1, candidates >= 0")
        if self.ngram < 2:
            raise ValueError("lookahead ngram must be at least 2")


@dataclass(frozen=True)
class GenerationConfig:
    mode: str = "tree"
    max_tokens: int = 256
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    tree: TreeConfig = field(default_factory=TreeConfig)
    chain_length: int = 4  # draft tokens per step in `chain` mode
    lookup: LookupConfig = field(default_factory=LookupConfig)
    lookahead: LookaheadConfig = field(default_factory=LookaheadConfig)
    prefill_chunk: int = 256
    pipeline: bool = True  # streamed target: draft while its layers load
    # decode every tree node's text into StepEvent.tree_texts (a tree view wants it; the CLI and
    # bench do not). A flag, not a lazy property: events stay plain data, safe to pass between
    # threads and to serialize, and the tokenizer is only used on the engine thread.
    tree_texts: bool = False
    # rows of the vocabulary the draft scores: "auto", "full", or the lowest N ids (+ special
    # and conversation tokens); the target always verifies with its full vocabulary
    draft_vocab: str | int = "auto"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"Unknown mode {self.mode!r}: choose one of {', '.join(MODES)}.")
        v = self.draft_vocab
        if v not in DRAFT_VOCABS and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError(
                f"Invalid setting draft_vocab = {v!r} (vocabulary rows the draft scores): use "
                "'auto', 'full' or a whole number >= 1.")
        check_limits(self)
        for name, kind in (("sampling", SamplingConfig), ("tree", TreeConfig)):
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(f"Invalid setting {name}: expected a {kind.__name__}.")


DRAFT_VOCABS = ("auto", "full")  # or a whole number: rows of the draft's low-id block
# draft_vocab "auto": vocabularies above this many ids get a draft vocabulary subset (FR-Spec,
# engine.decoding.draft_vocab) of the lowest DRAFT_VOCAB_AUTO_ROWS ids (+ special and
# conversation tokens). Qwen2.5-Coder pair, 3 code prompts: the target's greedy tokens fell
# outside a 32768-row subset 4.3 % of the time (fixed 64-node trees: 8.4 -> 7.1 tokens/pass,
# more than the 16 % faster draft forward wins back), outside 65536 rows 1.4 %
DRAFT_VOCAB_AUTO_ABOVE = 65536
DRAFT_VOCAB_AUTO_ROWS = 65536

DEFAULT_PREFETCH = 2  # streamed layers the IO thread may hold ready ahead of compute
DEFAULT_READ_TIMEOUT = 60.0  # seconds one streamed layer read may take (stuck storage)


@dataclass(frozen=True)
class StreamConfig:
    """How a streamed target (one loaded under a memory budget) reads its layers.

    prefetch: streamed layers the IO thread may hold ready ahead of compute (>= 1).
    bypass_cache: evict what is read from the OS page cache, so passes really read storage.
    read_timeout: seconds one layer read may take before the pass ends with a StreamingError
        naming the file (a stuck network volume or dying disk must not hang the app forever).
    """

    prefetch: int = DEFAULT_PREFETCH
    bypass_cache: bool = True
    read_timeout: float = DEFAULT_READ_TIMEOUT

    def __post_init__(self):
        check_limits(self)


# What the auto policy measured about a pair (a 1-token draft forward, a 1-token target pass),
# kept across processes (engine.costmodel.timing_store): the file beside the models folder, its
# format version, and the entries kept (the least recently updated go first).
TIMINGS_FILE = "timings.json"
TIMINGS_VERSION = 1
TIMINGS_MAX_ENTRIES = 64


BENCH_PROMPTS = 20  # greedy prompts of a full `canopy bench` (half as many sampled, bad-draft)
BENCH_MAX_TOKENS = 24  # new tokens per prompt of a full `canopy bench`
DRAFT_FREE_MAX_TOKENS = 96  # new tokens per prompt of `canopy bench --draft-free`
DRAFT_FREE_FRACTIONS = (None, 0.5)  # its budgets: resident, then half the layer bytes streamed
DRAFT_FREE_AR_PROBE_TOKENS = 8  # its ar row's tokens when ar's ids come from an earlier run
# Before any tree was verified, the share of what a draft whose every token is accepted would
# save that must repay catching the draft up on pending tokens (engine.costmodel.catch_up,
# CatchUpDecisions.catch_up_gain): the catch-up is paid before the draft's acceptance is
# known, so it must pay off even if the draft wins only half the perfect gain (a good draft's
# catch-up costs a sliver of it; the 2-bit draft's streamed one cost 0.6-0.9 of it).
CATCH_UP_PERFECT_SHARE = 0.5

SPEED_PROMPT_TOKENS = (32, 256, 1000)  # `canopy bench --speed`: prompt lengths vs mlx-lm
SPEED_FRESH_PAIRS = 2  # its fresh-process pairs (no stored timing, then the stored one)
SPEED_REPEATS = 3  # its rounds of the resident rows (medians of per-round ratios, ranges)
# A benchmark's bad draft (the target requantized to 2 bits) is written back as floats up to this
# size (as fast as the target per token); above it, kept quantized (a second float copy of a
# multi-GB target would not fit in memory beside it)
BAD_DRAFT_FLOAT_MAX_BYTES = 2 << 30
IOBENCH_MB, IOBENCH_LAYERS, IOBENCH_REPEAT = 256, 16, 3  # `canopy bench --io`: file, layers, passes
# `canopy bench --pair coder` (Qwen2.5-Coder 1.5B target, 6.7 GB fp32): new tokens per prompt,
# the fixed large tree budget, the wall-time budget the run plans its prompt counts for, and
# the memory cgroup limit below the target's size
CODER_BENCH_MAX_TOKENS = 48
CODER_BENCH_TREE_NODES = 64
CODER_BENCH_MINUTES = 55.0
CODER_CGROUP_LIMIT_BYTES = 5_500_000_000


@dataclass(frozen=True)
class PromptCacheConfig:
    """Conversations whose KV caches stay between turns (engine.decoding.prompt_cache).

    SmolLM2-135M holds ~46 KB of fp32 keys/values per token and model, so the default byte
    bound keeps a few long conversations of the demo pair; `folder` (None: memory only)
    receives the evicted ones (and all of them on `flush`) as safetensors.
    """

    max_conversations: int = 4
    max_bytes: int | None = 1 << 30
    folder: str | None = None
    max_disk_bytes: int = 2 << 30  # the folder's oldest files go beyond this

    def __post_init__(self):
        if self.max_conversations < 1:
            raise ValueError("max_conversations must be at least 1")
        if self.max_bytes is not None and self.max_bytes < 0:
            raise ValueError("max_bytes must be positive (or None: no byte bound)")


@dataclass(frozen=True)
class SoakConfig:
    """`canopy soak`: many short generations in one process (engine.bench.soak)."""

    generations: int = 200
    max_tokens: int = 8
    reload_every: int = 50  # reload both models every this many generations (0: never)
    sample_every: int = 20  # process samples (RSS, fds, threads, MLX memory)
    warmup: int = 20  # growth is measured from the first sample at or after this many
    cancel_every: int = 7  # every 7th generation is cancelled mid-answer (0: never)
    temperature: float = 0.7  # of the sampled generations
    budget_fraction: float = 0.5  # streamed target: budget as a fraction of its weight bytes

    def __post_init__(self):
        if self.generations < 1:
            raise ValueError("generations must be at least 1")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if self.sample_every < 1:
            raise ValueError("sample_every must be at least 1")
        if min(self.reload_every, self.warmup, self.cancel_every) < 0:
            raise ValueError("reload_every, warmup and cancel_every must not be negative")
        if not 0 < self.budget_fraction <= 1:
            raise ValueError("budget_fraction must be in (0, 1]")
        if not self.temperature > 0:
            raise ValueError("temperature of the sampled generations must be positive")


@dataclass(frozen=True)
class AdaptConfig:
    """Online draft adaptation (engine.adapt): what is recorded and how the draft is tuned.

    top_k: target probabilities kept per verified position; cap_bytes: the on-disk buffer's
    ceiling per (target, draft) pair (oldest sequences go first). LoRA adapters of `rank` on the
    last `layers` draft blocks (earlier blocks frozen and not back-propagated through);
    `steps_per_slice` optimizer steps (one recorded sequence each) between yields; training
    stops after `max_epochs` or `patience` epochs without a better held-out loss.
    """

    top_k: int = 32
    cap_bytes: int = 64 * 2**20
    layers: int = 4
    rank: int = 8
    scale: float = 2.0
    learning_rate: float = 5e-4
    steps_per_slice: int = 4
    max_epochs: int = 4
    patience: int = 1
    holdout_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self):
        for name in ("top_k", "cap_bytes", "layers", "rank", "steps_per_slice", "max_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"adapt {name} must be a whole number >= 1, not {value!r}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ConfigError("adapt holdout_fraction must lie strictly between 0 and 1")
        if not self.learning_rate > 0 or not self.scale > 0:
            raise ConfigError("adapt learning_rate and scale must be more than 0")
