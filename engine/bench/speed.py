"""Never slower than plain mlx-lm (issue 16): Canopy against mlx-lm's own `generate` command.

One run, same prompts (cut from the benchmark prompt set at a few token lengths):
- mlx-lm, target alone, in its own process with its defaults (`python -m mlx_lm generate`,
  greedy, no chat template); its printed prompt rate gives TTFT (prefill + first token) and its
  generation rate the decode tok/s;
- Canopy `ar`, resident, the same figures (TTFT = Stats.ttft_seconds; decode tok/s counted as
  mlx-lm counts it: all generated tokens over the seconds from the first token to the last);
- Canopy tree (auto) with a bad draft, resident: decode tok/s against mlx-lm's, and whole
  answers (TTFT + decode; the draft's prefill, deferred past the first token, counts there);
  with the default draft-free branches (prompt lookup, n-gram pool: they may win on their own
  where the answer repeats the prompt) and with the draft model's tree alone (the cost of
  the bad draft's exit);
- extra row: mlx-lm's `stream_generate` in Canopy's process on the weights Canopy holds
  (engine.bench.peer_in_process): the same BLAS threads and arrays, so its ratio to Canopy `ar`
  is the decode loops' alone (it takes its turn in the rotated order with Canopy's runs);
- tree (auto) with the bad draft in fresh processes, as a user's next `canopy` run meets it:
  the first finds no stored timing (it times the draft), the next starts from the timing the
  first stored (engine.costmodel.timing_store; pairs of processes, middle prompt length);
- streamed at a fraction of the target's bytes: `ar` and tree (auto) with the bad draft, against
  the bound of a layer-by-layer loop whose reads fully overlap compute at the bandwidth the IO
  thread measured in that run: 1 / max(bytes read per token / bandwidth, resident ar seconds
  per token), and the gap to it.
The resident rows run in rounds (`SpeedSpec.repeats`): per prompt length mlx-lm's process, then
Canopy's three runs in a rotated order, in one session; figures are medians and each ratio the
median of the rounds' own ratios, with its range. mlx-lm runs beside the loaded session when
the machine holds the target twice (else all its runs go first, while no Canopy model is
loaded). Canopy's in-process session keeps the draft's timing in memory only (the first answer
with the bad draft times it), as before stored timings existed, and, as any session, what its
draft-free branches learned in earlier answers (engine.decoding.branch_prior.LookupMemory).
"""

from __future__ import annotations

import gc
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median

import mlx.core as mx

from ..config import (
    SPEED_FRESH_PAIRS,
    SPEED_PROMPT_TOKENS,
    SPEED_REPEATS,
    GenerationConfig,
    LookupConfig,
)
from ..events import Finished, StepEvent
from .environment import env_load, environment, peer_environment
from .pair import Pair, Report
from .peer_in_process import run_in_process, share_weights

PROMPTS_FILE = Path(__file__).resolve().parents[2] / "resources" / "bench_prompts.json"
RATE = re.compile(r"^(Prompt|Generation): (\d+) tokens, ([\d.]+) tokens-per-sec", re.M)


@dataclass(frozen=True)
class SpeedSpec:
    prompt_tokens: tuple[int, ...] = SPEED_PROMPT_TOKENS
    max_tokens: int = 48
    stream_fraction: float = 0.5
    fresh_pairs: int = SPEED_FRESH_PAIRS
    repeats: int = SPEED_REPEATS  # rounds of the resident rows (medians, ranges)


LEAD_IN = "\n\nA long, detailed answer to the first question:\n\n1."  # so no run ends at once


def prompt_texts(tokenizer, lengths) -> dict[int, str]:
    """Texts of about `n` tokens each: the benchmark prompts joined as one document, cut, and a
    lead-in that a model continues (greedy decoding must not stop at the first token)."""
    prompts = json.loads(PROMPTS_FILE.read_text())["prompts"]
    doc = "\n".join(p["text"] for p in prompts)
    ids = tokenizer.encode(doc)
    lead = len(tokenizer.encode(LEAD_IN))
    while len(ids) < max(lengths):
        ids = ids + tokenizer.encode("\n" + doc)
    return {n: tokenizer.decode(ids[: max(1, n - lead)]) + LEAD_IN for n in lengths}


def run_mlx_lm(target: Path, prompt: str, max_tokens: int) -> dict:
    """mlx-lm's own command in a fresh process (its defaults; greedy; no chat template)."""
    cmd = [sys.executable, "-m", "mlx_lm", "generate", "--model", str(target), "--prompt",
           prompt, "--max-tokens", str(max_tokens), "--temp", "0", "--ignore-chat-template"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env=peer_environment()).stdout
    rates = {kind: (int(n), float(r)) for kind, n, r in RATE.findall(out)}
    prompt_n, prompt_rate = rates["Prompt"]
    gen_n, gen_rate = rates["Generation"]
    ttft = prompt_n / prompt_rate
    return {"prompt_tokens": prompt_n, "ttft_seconds": ttft, "generated_tokens": gen_n,
            "decode_tokens_per_second": gen_rate, "total_seconds": ttft + gen_n / gen_rate}


def run_canopy(session, ids: list[int], config: GenerationConfig) -> dict:
    """One generation; decode tok/s as mlx-lm counts it: all generated tokens over the seconds
    from the first token to the last."""
    first = last = None
    tokens = 0
    start = time.perf_counter()
    for event in session.generate(ids, config):
        if isinstance(event, StepEvent) and event.token_ids:
            last = time.perf_counter()
            first = first or last
            tokens += len(event.token_ids)
        if isinstance(event, Finished):
            stats = event.stats
    after_first = (last - first) if first is not None and last > first else 0.0
    return {
        "prompt_tokens": stats.prompt_tokens,
        "ttft_seconds": stats.ttft_seconds,
        "generated_tokens": stats.generated_tokens,
        "decode_tokens_per_second": tokens / after_first if after_first else 0.0,
        "stats_tokens_per_second": stats.tokens_per_second,
        "total_seconds": time.perf_counter() - start,
        "target_passes": stats.target_passes,
        "target_bytes_read_per_token": stats.target_bytes_read_per_token,
        "io_seconds": stats.extra.get("io_seconds", 0.0),
        "draft_tokens_proposed": stats.draft_tokens_proposed,
        "draft_timing_stored": stats.extra.get("draft_timing_stored"),
    }


FRESH = "import sys; from engine.bench.speed import fresh_main; fresh_main(sys.argv[1])"


def run_fresh(pair: Pair, text: str, max_tokens: int, timings: Path, out: Path) -> dict:
    """Tree (auto) with the bad draft, one answer in a fresh process whose timing file is
    `timings` (shared by the runs of a pair)."""
    job = out.with_suffix(".job.json")
    job.write_text(json.dumps({"target": str(pair.target), "draft": str(pair.bad_draft),
                               "text": text, "max_tokens": max_tokens,
                               "timings": str(timings), "out": str(out)}))
    subprocess.run([sys.executable, "-c", FRESH, str(job)], check=True, capture_output=True,
                   env=peer_environment())  # Canopy as shipped: its own BLAS threads
    return json.loads(out.read_text())


def fresh_main(job_path: str) -> None:
    """The fresh process's entry (run_fresh)."""
    from ..costmodel.timing_store import TimingStore
    from ..session import Session

    spec = json.loads(Path(job_path).read_text())
    session = Session.load(spec["target"], spec["draft"], timings=TimingStore(spec["timings"]))
    try:
        ids = session.target.tokenizer.encode(spec["text"])
        # the draft model's tree alone: the bad draft's exit, not what prompt lookup wins
        row = run_canopy(session, ids, GenerationConfig(
            mode="tree", max_tokens=spec["max_tokens"], lookup=LookupConfig(sources=())))
    finally:
        session.close()
    Path(spec["out"]).write_text(json.dumps(row))


def fresh_rows(pair: Pair, n: int, text: str, mlx: dict, spec: SpeedSpec, folder: Path,
               report: Report) -> dict:
    """`spec.fresh_pairs` pairs of fresh processes on the `n`-token prompt: no stored timing,
    then the one the first stored; decode and whole-answer ratios to mlx-lm's row."""
    runs: dict[str, list] = {"no_stored_timing": [], "stored_timing": []}
    for i in range(spec.fresh_pairs):
        report(f"fresh processes, pair {i + 1}/{spec.fresh_pairs}: tree (auto), bad draft, "
               "without then with a stored timing")
        timings = folder / f"fresh-timings-{i}.json"
        for kind in runs:
            row = run_fresh(pair, text, spec.max_tokens, timings, folder / f"fresh-{i}-{kind}.json")
            row["decode_ratio"] = ratio(row["decode_tokens_per_second"],
                                        mlx["decode_tokens_per_second"])
            row["total_ratio"] = ratio(mlx["total_seconds"], row["total_seconds"])
            runs[kind].append(row)
    return {"prompt_tokens": n} | runs


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


CONFIGS = ("canopy_ar", "canopy_auto_bad", "canopy_auto_bad_draft_tree_only")
IN_PROCESS = "mlx_lm_in_process"  # extra row: mlx-lm in this process on Canopy's weights
# row ratio: (Canopy config, figure, Canopy's over the peer's (True) or the inverse, peer run)
RATIOS = {
    "ar_decode_ratio": ("canopy_ar", "decode_tokens_per_second", True, "mlx_lm"),
    "ar_ttft_ratio": ("canopy_ar", "ttft_seconds", True, "mlx_lm"),
    "auto_bad_decode_ratio": ("canopy_auto_bad", "decode_tokens_per_second", True, "mlx_lm"),
    # whole answers (TTFT + decode): the draft's deferred prefill counts here
    "auto_bad_total_ratio": ("canopy_auto_bad", "total_seconds", False, "mlx_lm"),
    "auto_bad_draft_tree_only_decode_ratio": ("canopy_auto_bad_draft_tree_only",
                                              "decode_tokens_per_second", True, "mlx_lm"),
    "auto_bad_draft_tree_only_total_ratio": ("canopy_auto_bad_draft_tree_only",
                                             "total_seconds", False, "mlx_lm"),
    # the same process, the same weights: the decode loops alone
    "ar_decode_ratio_in_process": ("canopy_ar", "decode_tokens_per_second", True, IN_PROCESS),
    "ar_ttft_ratio_in_process": ("canopy_ar", "ttft_seconds", True, IN_PROCESS),
}


def configs(max_tokens: int) -> dict[str, GenerationConfig]:
    return {
        "canopy_ar": GenerationConfig(mode="ar", max_tokens=max_tokens),
        "canopy_auto_bad": GenerationConfig(mode="tree", max_tokens=max_tokens),
        "canopy_auto_bad_draft_tree_only": GenerationConfig(
            mode="tree", max_tokens=max_tokens, lookup=LookupConfig(sources=())),
    }


def summary(n: int, samples: list[dict]) -> dict:
    """A prompt length's row: every repetition's figures (`samples`), each figure's median per
    run kind, and each ratio as the median of the repetitions' own ratios (a repetition's runs
    are neighbours in time: load drifts cancel in its ratio) with its range."""
    row = {"prompt_tokens": n, "samples": samples}
    kinds = [k for k in ("mlx_lm", IN_PROCESS, *CONFIGS) if all(k in s for s in samples)]
    for kind in kinds:
        runs = [s[kind] for s in samples]
        row[kind] = {k: median([r[k] for r in runs]) if isinstance(runs[0][k], float) else
                     runs[0][k] for k in runs[0]}
    for name, (kind, figure, canopy_over, peer) in RATIOS.items():
        if peer not in kinds:
            continue
        values = [ratio(s[kind][figure], s[peer][figure]) if canopy_over else
                  ratio(s[peer][figure], s[kind][figure]) for s in samples]
        values = [v for v in values if v is not None]
        row[name] = median(values) if values else None
        row[name + "_range"] = [min(values), max(values)] if values else None
    return row


def first_answer_ratio(rows: list[dict]) -> float | None:
    """Decode ratio to mlx-lm of the session's first tree (auto) answer with the bad draft
    (round 1's first prompt length; later answers start from what its branches learned)."""
    if not rows or not rows[0]["samples"]:
        return None
    first = rows[0]["samples"][0]
    return ratio(first["canopy_auto_bad"]["decode_tokens_per_second"],
                 first["mlx_lm"]["decode_tokens_per_second"])


def resident_rows(pair: Pair, spec: SpeedSpec, texts: dict[int, str], weights: int,
                  report: Report):
    """`spec.repeats` rounds over the prompt lengths: per length mlx-lm's process, then
    Canopy's three runs (their order rotated each round) in one resident session. mlx-lm runs
    beside the loaded session when the machine has room for a second copy of the target
    (else all its runs go first, while no Canopy model is loaded). Returns the rows and whether
    the runs were interleaved; `weights`: the target's weight bytes."""
    from ..costmodel.timing_store import TimingStore
    from ..session import Session
    from .process import available_bytes

    mlx_runs: dict[int, list[dict]] = {n: [] for n in texts}
    interleaved = available_bytes() > 2.5 * weights + 2 * 2**30
    if not interleaved:
        for r in range(spec.repeats):
            for n, text in texts.items():
                report(f"{n} prompt tokens: mlx-lm target alone, run {r + 1}/{spec.repeats}")
                mlx_runs[n].append(run_mlx_lm(pair.target, text, spec.max_tokens))
    runs = configs(spec.max_tokens)
    resident = Session.load(pair.target, pair.bad_draft, timings=TimingStore(None))
    samples: dict[int, list[dict]] = {n: [] for n in texts}
    try:
        ids = {n: resident.target.tokenizer.encode(text) for n, text in texts.items()}
        peer = share_weights(resident.target)
        if isinstance(peer, str):
            report(f"mlx-lm in this process: not run ({peer})")
            peer = None
        kinds = CONFIGS + ((IN_PROCESS,) if peer else ())
        run_canopy(resident, ids[spec.prompt_tokens[0]], runs["canopy_ar"])  # warm-up
        if peer:
            run_in_process(*peer, ids[spec.prompt_tokens[0]], spec.max_tokens)
        for r in range(spec.repeats):
            order = kinds[r % len(kinds):] + kinds[: r % len(kinds)]
            for n, text in texts.items():
                report(f"{n} prompt tokens, round {r + 1}/{spec.repeats}: "
                       + ("mlx-lm target alone (its own process), " if interleaved else "")
                       + "Canopy ar, tree (auto) with the bad draft (2 ways)"
                       + (", mlx-lm in this process" if peer else ""))
                mlx = run_mlx_lm(pair.target, text, spec.max_tokens) if interleaved else (
                    mlx_runs[n][r])
                sample = {"mlx_lm": mlx, "order": list(order)}
                for kind in order:
                    sample[kind] = run_in_process(*peer, ids[n], spec.max_tokens) if (
                        kind == IN_PROCESS) else run_canopy(resident, ids[n], runs[kind])
                samples[n].append(sample)
    finally:
        resident.close()
    return [summary(n, s) for n, s in samples.items()], interleaved


def run_speed(pair: Pair, spec: SpeedSpec, report: Report = lambda text: None,
              folder: Path | None = None) -> dict:
    """The rows above, as one JSON-ready dict (`rows`, `fresh`, `streamed`, `spec`).
    `folder`: for the fresh processes' files (None: no fresh-process rows)."""
    from ..costmodel.timing_store import TimingStore
    from ..formats.loader import load_tokenizer
    from ..session import Session

    env = environment()  # date, BLAS threads, load at the start
    texts = prompt_texts(load_tokenizer(Path(pair.target)), spec.prompt_tokens)
    weights = sum(f.stat().st_size for f in Path(pair.target).glob("*.safetensors"))
    rows, interleaved = resident_rows(pair, spec, texts, weights, report)
    gc.collect()  # the resident session's weights go before the next ones load
    mx.clear_cache()
    runs = configs(spec.max_tokens)
    ar, auto = runs["canopy_ar"], runs["canopy_auto_bad"]
    mlx_rows = {row["prompt_tokens"]: row["mlx_lm"] for row in rows}
    fresh = None
    if folder is not None and spec.fresh_pairs > 0:
        n = spec.prompt_tokens[len(spec.prompt_tokens) // 2]
        fresh = fresh_rows(pair, n, texts[n], mlx_rows[n], spec, folder, report)
    budget = int(weights * spec.stream_fraction)
    report(f"streamed at {spec.stream_fraction:.0%}: Canopy ar, tree (auto) with the bad draft")
    streamed = Session.load(pair.target, pair.bad_draft, budget_bytes=budget,
                            timings=TimingStore(None))
    try:
        ids = streamed.target.tokenizer.encode(texts[spec.prompt_tokens[0]])
        s_ar = run_canopy(streamed, ids, ar)
        s_auto = run_canopy(streamed, ids, auto)
    finally:
        streamed.close()
    resident_ar = rows[0]["canopy_ar"]["decode_tokens_per_second"]
    bandwidth = s_ar["target_bytes_read_per_token"] * s_ar["generated_tokens"] / s_ar[
        "io_seconds"] if s_ar["io_seconds"] else 0.0
    read_s = s_ar["target_bytes_read_per_token"] / bandwidth if bandwidth else 0.0
    bound = 1.0 / max(read_s, 1.0 / resident_ar) if resident_ar else 0.0
    return {
        "spec": vars(spec) | {"pair": pair.description, "interleaved": interleaved},
        "environment": env | {"load_average_end": env_load()},
        "rows": rows,
        # the session's first answer with draft-free branches: nothing learned yet (explores)
        "first_auto_answer_decode_ratio": first_answer_ratio(rows),
        "fresh": fresh,
        "streamed": {
            "budget_bytes": budget, "ar": s_ar, "auto_bad": s_auto,
            "read_bandwidth_bytes_per_second": bandwidth,
            "layer_loop_bound_tokens_per_second": bound,
            "ar_to_bound": ratio(s_ar["decode_tokens_per_second"], bound),
            # the cost model's layer loop: bytes read per token at the measured bandwidth
            "bound_read_seconds_per_token": read_s,
            "bound_compute_seconds_per_token": 1.0 / resident_ar if resident_ar else 0.0,
            "auto_bad_to_ar": ratio(s_auto["decode_tokens_per_second"],
                                    s_ar["decode_tokens_per_second"]),
        },
    }
