"""One benchmark configuration on one prompt: Canopy's generator or mlx-lm, measured the same way.

Decode speed excludes the prompt: Canopy's `Stats.tokens_per_second` counts every emitted token
over the decode steps (its prefill stops before the last prompt token); for mlx-lm, whose prompt
pass already yields the first token, it is (N - 1) tokens over the time from the first token
to the last. IO figures (bytes read, IO wait) are decode-only too, so `io_wait_fraction` is IO
wait over decode seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..config import GenerationConfig, LookupConfig, SamplingConfig, TreeConfig
from ..decoding.stats import DepthAcceptance
from ..events import Failed, Finished, StepEvent
from ..streaming.memory import peak_rss_bytes

BUDGETS = ("resident", "50%", "25%")
FRACTIONS = {"resident": None, "50%": 0.5, "25%": 0.25}
SAMPLINGS = {"greedy": 0.0, "t=0.7": 0.7}


@dataclass(frozen=True)
class Config:
    """One row of the benchmark."""

    engine: str  # "mlx-lm" | "canopy"
    mode: str  # "ar" | "chain" | "tree"
    budget: str  # "resident" | "50%" | "25%"
    sampling: str  # "greedy" | "t=0.7"
    k: int = 0  # draft tokens per step (chain, mlx-lm speculative)
    pipeline: bool = False
    draft: str = "good"  # "good" | "bad" (the bad-draft check) | "none"
    nodes: int = 0  # tree: a fixed node budget (auto policy off); 0 = tree (auto)

    @property
    def label(self) -> str:
        if self.engine == "mlx-lm":
            return "mlx-lm target alone" if self.mode == "ar" else f"mlx-lm speculative k={self.k}"
        name = {
            "ar": "Canopy ar",
            "chain": f"Canopy chain k={self.k}",
            "tree": f"Canopy tree, {self.nodes} nodes" if self.nodes else "Canopy tree (auto)",
        }
        text = name[self.mode] + (" + pipeline" if self.pipeline else "")
        return text + (" [bad draft]" if self.draft == "bad" else "")

    @property
    def key(self) -> str:
        return f"{self.label} | {self.budget} | {self.sampling}"


@dataclass
class Sample:
    """What one generation measured."""

    prompt: int  # index in the prompt set
    tokens: int
    seconds: float  # decode seconds behind `rate`
    rate: float  # tokens/s of this prompt
    passes: int
    proposed: int = 0  # draft tokens proposed
    accepted: int = 0
    # (taken, reached) at depth 1 in engine.decoding.stats.DepthAcceptance's definition
    depth1: tuple[int, int] = (0, 0)
    bytes_read: int = 0  # decode only, like io_wait (prefill IO is not in `seconds` either)
    peak_resident: int = 0
    io_wait: float = 0.0
    root_only: int = 0  # tree steps that drafted nothing (auto fallback to ar)
    nodes: int = 0  # tree nodes verified, root included
    extra: dict = field(default_factory=dict)
    ids: tuple[int, ...] = ()  # the generated token ids
    peak_rss: int = 0  # the process's OS high-water mark at the end (Stats.peak_rss_bytes)


def sampling_config(name: str, seed: int) -> SamplingConfig:
    return SamplingConfig(temperature=SAMPLINGS[name], top_p=1.0, seed=seed)


def run_canopy(session, ids: list[int], cfg: Config, max_tokens: int, prompt: int,
               steps: list | None = None) -> Sample:
    """One generation of `cfg` on prompt `ids`; its StepEvents are appended to `steps` if given."""
    tree = TreeConfig()
    if cfg.nodes:  # a fixed budget: every step drafts a tree of `nodes` (no fallback to ar)
        tree = TreeConfig(max_nodes=cfg.nodes, max_depth=max(tree.max_depth, cfg.nodes // 4),
                          auto=False)
    gen = GenerationConfig(
        mode=cfg.mode,
        max_tokens=max_tokens,
        sampling=sampling_config(cfg.sampling, prompt),
        tree=tree,
        chain_length=max(cfg.k, 1),
        pipeline=cfg.pipeline,
        # draft-model trees only: the cost model predicts those (merged trees: issue 12's bench)
        lookup=LookupConfig(sources=()),
    )
    reset = getattr(session.target.model, "reset_peak", None)
    if reset is not None:
        reset()
    root_only = nodes = 0
    depth = DepthAcceptance()
    for event in session.generate(ids, gen):
        if isinstance(event, StepEvent):
            n = len(event.tree_tokens)
            nodes += n
            root_only += n == 1 and cfg.mode == "tree"
            depth.add(event)
            if steps is not None:
                steps.append(event)
        elif isinstance(event, Failed):
            raise RuntimeError(f"{cfg.key}: {event.message}")
        elif isinstance(event, Finished):
            s = event.stats
            peak = s.peak_target_resident_bytes or session.target.nbytes()
            return Sample(
                prompt=prompt,
                tokens=s.generated_tokens,
                seconds=s.decode_seconds,
                rate=s.tokens_per_second,
                passes=s.target_passes,
                proposed=s.draft_tokens_proposed,
                accepted=s.draft_tokens_accepted,
                depth1=(depth.taken[0], depth.reached[0]) if depth.reached else (0, 0),
                bytes_read=s.target_bytes_read,
                peak_resident=peak,
                io_wait=s.io_wait_seconds,
                root_only=root_only,
                nodes=nodes,
                extra={k: v for k, v in s.extra.items() if k.startswith("draft_tokens")},
                ids=tuple(event.token_ids),
                peak_rss=s.peak_rss_bytes,
            )
    raise RuntimeError(f"{cfg.key}: the generator ended without Finished")


def run_mlx_lm(
    model,
    tokenizer,
    draft,
    ids: list[int],
    cfg: Config,
    max_tokens: int,
    prompt: int,
    target_bytes: int,
) -> Sample:
    import mlx.core as mx
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    from ..blas_threads import use_blas_threads

    use_blas_threads(streamed=False)  # mlx-lm's default: every core (the model is resident)
    mx.random.seed(prompt)
    kw = {"draft_model": draft, "num_draft_tokens": cfg.k} if cfg.mode == "chain" else {}
    stamps, drafted, out = [], 0, []
    for r in stream_generate(
        model,
        tokenizer,
        ids,
        max_tokens=max_tokens,
        sampler=make_sampler(temp=SAMPLINGS[cfg.sampling]),
        **kw,
    ):
        stamps.append(time.perf_counter())
        drafted += bool(r.from_draft)
        out.append(int(r.token))
    n = len(stamps)
    seconds = stamps[-1] - stamps[0] if n > 1 else 0.0
    own = max(1, n - drafted)  # tokens the target produced itself: one per pass
    return Sample(
        prompt=prompt,
        tokens=n,
        seconds=seconds,
        rate=(n - 1) / seconds if seconds > 0 else 0.0,
        passes=own,
        proposed=cfg.k * own if cfg.mode == "chain" else 0,
        accepted=drafted,
        peak_resident=target_bytes,
        ids=tuple(out),
        peak_rss=peak_rss_bytes(),
    )


@dataclass
class Aggregate:
    """A configuration over all its prompts."""

    config: Config
    samples: list[Sample]

    def total(self, name: str) -> float:
        return sum(getattr(s, name) for s in self.samples)

    @property
    def tokens_per_second(self) -> float:
        tokens = sum(s.tokens - (1 if self.config.engine == "mlx-lm" else 0) for s in self.samples)
        seconds = self.total("seconds")
        return tokens / seconds if seconds > 0 else 0.0

    def summary(self) -> dict:
        tokens, passes = self.total("tokens"), self.total("passes")
        taken = sum(s.depth1[0] for s in self.samples)
        reached = sum(s.depth1[1] for s in self.samples)
        proposed = self.total("proposed")
        steps_tree = passes if self.config.mode == "tree" else 0
        return {
            "label": self.config.label,
            "engine": self.config.engine,
            "mode": self.config.mode,
            "budget": self.config.budget,
            "sampling": self.config.sampling,
            "k": self.config.k,
            "pipeline": self.config.pipeline,
            "draft": self.config.draft,
            "prompts": len(self.samples),
            "tokens": tokens,
            "tokens_per_second": self.tokens_per_second,
            "tokens_per_pass": tokens / passes if passes else 0.0,
            "acceptance_depth1": taken / reached if reached else None,
            "draft_accepted_fraction": self.total("accepted") / proposed if proposed else None,
            "bytes_read_per_token": self.total("bytes_read") / tokens if tokens else 0.0,
            "peak_target_resident_bytes": max(s.peak_resident for s in self.samples),
            "peak_rss_bytes": max(s.peak_rss for s in self.samples),
            "io_wait_fraction": self.total("io_wait") / max(self.total("seconds"), 1e-9),
            "auto_ar_fraction": self.total("root_only") / steps_tree if steps_tree else None,
            "mean_tree_nodes": self.total("nodes") / passes if passes and steps_tree else None,
            "pipeline_draft_tokens": sum(
                s.extra.get("draft_tokens_during_io", 0) for s in self.samples
            ),
            "pipeline_draft_tokens_used": sum(
                s.extra.get("draft_tokens_during_io_used", 0) for s in self.samples
            ),
            "per_prompt_tokens_per_second": [s.rate for s in self.samples],
        }
