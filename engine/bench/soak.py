"""The soak run: many generations in one process, measuring what the process keeps holding.

Generations cycle through modes (ar, chain, tree), greedy and sampled, resident and streamed
target, with cancels (the generator closed mid-answer, or `should_stop`) and a full model reload
every `reload_every` generations. Process samples (RSS, fds, threads, MLX memory) are taken at
the start, every `sample_every` generations and at the end, after a `gc.collect()` so that
garbage not yet collected is not counted as a leak. Greedy answers to the same prompt must be
identical in every mode and residency (the losslessness invariant, checked over the whole run).
Yields records, never prints (the CLI formats them).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..config import GenerationConfig, SamplingConfig, SoakConfig, StreamConfig
from ..events import Failed, Finished, StepEvent
from ..runtime import release_memory
from .process import ProcessSample, sample_process

MODES = ("ar", "chain", "tree")
PROMPTS = (
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain what a hash table is in one sentence.",
    "List three prime numbers.",
    "How do plants make food?",
)


@dataclass(frozen=True)
class SoakRun:
    """One generation of the soak."""

    index: int
    mode: str
    streamed: bool
    sampled: bool
    cancel: str  # "" | "close" (generator closed mid-answer) | "stop" (should_stop)
    reason: str  # Finished.reason, "closed", or "failed"
    tokens: int
    seconds: float
    error: str = ""


@dataclass(frozen=True)
class SoakSample:
    label: str  # "start" | "every" | "end" | "closed" (after the sessions were closed)
    generations: int  # generations done when sampled
    seconds: float  # since the soak started
    process: ProcessSample


@dataclass(frozen=True)
class SoakReport:
    generations: int
    reloads: int
    cancelled: int
    failures: int
    greedy_mismatches: int  # greedy answers that differed from the first one to that prompt
    warmup_generations: int
    rss_growth_after_warmup: float  # (RSS at end - RSS after warm-up) / RSS after warm-up
    rss_max_growth_after_warmup: float
    fd_growth: int  # end minus after warm-up
    thread_growth: int
    os_thread_growth: int
    samples: tuple[SoakSample, ...]
    seconds: float
    errors: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


class _Pair:
    """The resident session and a streamed session sharing its draft."""

    def __init__(self, target_dir: Path, draft_dir: Path, budget: int | None, fraction: float,
                 stream: StreamConfig):
        from ..session import Session
        from ..streaming.streamed_model import load_streamed_model
        from ..streaming.weights import index_model

        self.resident = Session.load(target_dir, draft_dir)
        if budget is None:
            budget = int(fraction * index_model(target_dir).nbytes)
        target = load_streamed_model(target_dir, budget, prefetch=stream.prefetch,
                                     bypass_cache=stream.bypass_cache,
                                     read_timeout=stream.read_timeout)
        self.streamed = Session(target, self.resident.draft)

    def quiesce(self) -> None:
        """Stop the IO thread between passes (it restarts with the next one), so a sample
        never counts the file it happens to be reading."""
        self.streamed.target.model.stop()

    def close(self) -> None:
        self.streamed.close()
        self.resident.close()


def schedule(i: int, config: SoakConfig) -> tuple[str, bool, bool, str]:
    """(mode, streamed, sampled, cancel) of generation i: every combination recurs every 12."""
    mode = MODES[i % 3]
    sampled = (i // 3) % 2 == 1
    streamed = (i // 6) % 2 == 1
    cancel = ""
    if config.cancel_every and i % config.cancel_every == config.cancel_every - 1:
        cancel = "close" if (i // config.cancel_every) % 2 == 0 else "stop"
    return mode, streamed, sampled, cancel


def _one(session, i: int, mode: str, sampled: bool, cancel: str,
         config: SoakConfig) -> tuple[str, tuple[int, ...], str]:
    """Run generation i; returns (reason, token ids, error message)."""
    sampling = SamplingConfig(config.temperature, 1.0, i) if sampled else SamplingConfig()
    gen_config = GenerationConfig(mode=mode, max_tokens=config.max_tokens, sampling=sampling)
    prompt = session.encode_chat([{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}])
    stop = [False]
    events = session.generate(prompt, gen_config, should_stop=lambda: stop[0])
    steps = 0
    try:
        for event in events:
            if isinstance(event, StepEvent):
                steps += 1
                if cancel == "close" and steps == 1:
                    return "closed", (), ""
                if cancel == "stop" and steps == 1:
                    stop[0] = True
            elif isinstance(event, Finished):
                return event.reason, event.token_ids, ""
            elif isinstance(event, Failed):
                return "failed", (), event.message
    finally:
        events.close()  # a generator closed mid-answer runs its `finally` (cache rollback)
    return "failed", (), "the generator ended without Finished or Failed"


def _sample(label: str, done: int, t0: float, pair: _Pair | None) -> SoakSample:
    if pair is not None:
        pair.quiesce()
    gc.collect()
    return SoakSample(label, done, time.perf_counter() - t0, sample_process())


def run_soak(target_dir: str | Path, draft_dir: str | Path, config: SoakConfig | None = None,
             budget_bytes: int | None = None, stream: StreamConfig | None = None,
             ) -> Iterator[SoakRun | SoakSample | SoakReport]:
    """Yield a SoakRun per generation, SoakSamples as they are taken, then one SoakReport.

    The streamed target runs under `budget_bytes` (default `config.budget_fraction` of its
    weight bytes), reading its layers as `stream` says.
    """
    config = config or SoakConfig()
    t0 = time.perf_counter()
    def load() -> _Pair:
        return _Pair(Path(target_dir), Path(draft_dir), budget_bytes, config.budget_fraction,
                     stream or StreamConfig())

    pair = load()
    samples = [_sample("start", 0, t0, pair)]
    yield samples[-1]
    greedy: dict[int, tuple[int, ...]] = {}
    reloads = cancelled = failures = mismatches = 0
    errors: list[str] = []
    try:
        for i in range(config.generations):
            if i and config.reload_every and i % config.reload_every == 0:
                pair.close()
                pair = None
                release_memory()
                pair = load()
                reloads += 1
            mode, streamed, sampled, cancel = schedule(i, config)
            session = pair.streamed if streamed else pair.resident
            start = time.perf_counter()
            reason, ids, error = _one(session, i, mode, sampled, cancel, config)
            if cancel:
                cancelled += 1
            if reason == "failed":
                failures += 1
                errors.append(f"generation {i} ({mode}): {error}")
            elif not sampled and not cancel:
                first = greedy.setdefault(i % len(PROMPTS), ids)
                mismatches += first != ids
            session = None  # only `pair` holds the models (a reload must free them)
            yield SoakRun(i, mode, streamed, sampled, cancel, reason, len(ids),
                          time.perf_counter() - start, error)
            done = i + 1
            if done % config.sample_every == 0 and done < config.generations:
                samples.append(_sample("every", done, t0, pair))
                yield samples[-1]
        samples.append(_sample("end", config.generations, t0, pair))
        yield samples[-1]
    finally:
        if pair is not None:
            pair.close()
    pair = None
    release_memory()
    samples.append(_sample("closed", config.generations, t0, None))
    yield samples[-1]
    yield summarize(samples, config, reloads, cancelled, failures, mismatches, errors,
                    time.perf_counter() - t0)


def summarize(samples: list[SoakSample], config: SoakConfig, reloads: int, cancelled: int,
              failures: int, mismatches: int, errors: list[str], seconds: float) -> SoakReport:
    """Growth from the first sample at or after the warm-up to the end sample (sessions loaded)."""
    loaded = [s for s in samples if s.label != "closed"]
    warm = next((s for s in loaded if s.generations >= config.warmup), loaded[0])
    end = loaded[-1]
    after = [s for s in loaded if s.generations >= warm.generations]
    base = warm.process.rss_bytes
    return SoakReport(
        generations=config.generations, reloads=reloads, cancelled=cancelled, failures=failures,
        greedy_mismatches=mismatches, warmup_generations=warm.generations,
        rss_growth_after_warmup=(end.process.rss_bytes - base) / base,
        rss_max_growth_after_warmup=max(s.process.rss_bytes for s in after) / base - 1,
        fd_growth=end.process.open_fds - warm.process.open_fds,
        thread_growth=end.process.threads - warm.process.threads,
        os_thread_growth=end.process.os_threads - warm.process.os_threads,
        samples=tuple(samples), seconds=seconds, errors=tuple(errors[:20]),
    )


def format_table(report: SoakReport) -> str:
    """The samples as a Markdown table plus the summary line."""
    rows = ["| sample | generations | seconds | RSS MB | MLX active MB | MLX cache MB | fds | "
            "threads | OS threads |", "|---|---|---|---|---|---|---|---|---|"]
    for s in report.samples:
        p = s.process
        rows.append(f"| {s.label} | {s.generations} | {s.seconds:.0f} | {p.rss_bytes / 2**20:.0f} "
                    f"| {p.mlx_active_bytes / 2**20:.0f} | {p.mlx_cache_bytes / 2**20:.0f} | "
                    f"{p.open_fds} | {p.threads} | {p.os_threads} |")
    rows.append("")
    rows.append(
        f"{report.generations} generations, {report.reloads} reloads, {report.cancelled} "
        f"cancelled, {report.failures} failed, {report.greedy_mismatches} greedy mismatches; "
        f"after warm-up ({report.warmup_generations} generations): RSS growth "
        f"{100 * report.rss_growth_after_warmup:+.1f}% (max "
        f"{100 * report.rss_max_growth_after_warmup:+.1f}%), fds {report.fd_growth:+d}, threads "
        f"{report.thread_growth:+d}, OS threads {report.os_thread_growth:+d}")
    return "\n".join(rows)
