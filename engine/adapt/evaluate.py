"""Measure a pair on a prompt set (acceptance, tokens per pass, speed), optionally recording.

Acceptance here is per drafted position: among steps whose accepted path reached a node with
drafted children, the share where the target took one of them (DepthAcceptance summed over
depths). With a
greedy chain that is P(draft's top-1 == target's top-1) along the way, the figure distillation
should raise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from ..config import GenerationConfig
from ..decoding.stats import DepthAcceptance
from ..errors import CanopyError
from ..events import Failed, Finished, StepEvent
from .record import Buffer, Recorder


def read_prompts(path) -> list[str]:
    """One prompt per non-empty line."""
    try:
        with open(path, encoding="utf-8") as f:
            prompts = [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise CanopyError(f"Cannot read the prompt file {path}: {e.strerror}.") from e
    if not prompts:
        raise CanopyError(f"The prompt file {path} has no prompts (one per line).")
    return prompts


def measure(
    session,
    prompts: Iterable[str],
    config: GenerationConfig,
    buffer: Buffer | None = None,
    top_k: int = 32,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """Generate for each prompt (chat template) and sum up; with `buffer`, record into it."""
    depth = DepthAcceptance()  # summed over depths: acceptance per drafted position
    passes = generated = 0
    decode = record_seconds = write_seconds = 0.0
    n = 0
    for prompt in prompts:
        ids = session.encode_chat([{"role": "user", "content": prompt}])
        recorder = Recorder(ids, top_k) if buffer is not None else None
        for event in session.generate(ids, config, should_stop, observer=recorder):
            if isinstance(event, StepEvent):
                depth.add(event)
            elif isinstance(event, Failed):
                raise CanopyError(event.message)
            elif isinstance(event, Finished):
                passes += event.stats.target_passes
                generated += event.stats.generated_tokens
                decode += event.stats.decode_seconds
        n += 1
        if recorder is not None:
            t = time.perf_counter()
            seq = recorder.sequence()
            if seq is not None:
                buffer.add(seq)
            record_seconds += recorder.seconds
            write_seconds += time.perf_counter() - t
    out = {
        "prompts": n,
        "generated_tokens": generated,
        "target_passes": passes,
        "tokens_per_pass": generated / passes if passes else 0.0,
        "acceptance": depth.overall(),
        "drafted_positions": sum(depth.reached),
        "tokens_per_second": generated / decode if decode else 0.0,
        "decode_seconds": decode,
    }
    if buffer is not None:
        # in the decode loop (top-k per verified row) vs after it (conversion, shard write)
        out["record_seconds"] = record_seconds
        out["record_write_seconds"] = write_seconds
        out["record_share_of_decode"] = record_seconds / decode if decode else 0.0
        out["record_write_share_of_decode"] = write_seconds / decode if decode else 0.0
    return out
