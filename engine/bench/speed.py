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
- streamed at a fraction of the target's bytes: `ar` and tree (auto) with the bad draft, against
  the bound of a layer-by-layer loop whose reads fully overlap compute at the bandwidth the IO
  thread measured in that run: 1 / max(bytes read per token / bandwidth, resident ar seconds
  per token).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import SPEED_PROMPT_TOKENS, GenerationConfig, LookupConfig
from ..events import Finished, StepEvent
from .environment import peer_environment
from .pair import Pair, Report

PROMPTS_FILE = Path(__file__).resolve().parents[2] / "resources" / "bench_prompts.json"
RATE = re.compile(r"^(Prompt|Generation): (\d+) tokens, ([\d.]+) tokens-per-sec", re.M)


@dataclass(frozen=True)
class SpeedSpec:
    prompt_tokens: tuple[int, ...] = SPEED_PROMPT_TOKENS
    max_tokens: int = 48
    stream_fraction: float = 0.5


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
    }


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def run_speed(pair: Pair, spec: SpeedSpec, report: Report = lambda text: None) -> dict:
    """The rows above, as one JSON-ready dict (`rows`, `streamed`, `spec`)."""
    from ..session import Session

    ar = GenerationConfig(mode="ar", max_tokens=spec.max_tokens)
    auto = GenerationConfig(mode="tree", max_tokens=spec.max_tokens)
    draft_only = GenerationConfig(mode="tree", max_tokens=spec.max_tokens,
                                  lookup=LookupConfig(sources=()))
    resident = Session.load(pair.target, pair.bad_draft)
    texts = prompt_texts(resident.target.tokenizer, spec.prompt_tokens)
    rows = []
    try:
        run_canopy(resident, resident.target.tokenizer.encode(texts[spec.prompt_tokens[0]]), ar)
        for n, text in texts.items():
            ids = resident.target.tokenizer.encode(text)
            report(f"{n} prompt tokens: mlx-lm, Canopy ar, tree (auto) with the bad draft (2 ways)")
            mlx = run_mlx_lm(pair.target, text, spec.max_tokens)
            mine = run_canopy(resident, ids, ar)
            tree = run_canopy(resident, ids, auto)
            alone = run_canopy(resident, ids, draft_only)
            rows.append({
                "prompt_tokens": n, "mlx_lm": mlx, "canopy_ar": mine, "canopy_auto_bad": tree,
                "canopy_auto_bad_draft_tree_only": alone,
                "ar_decode_ratio": ratio(mine["decode_tokens_per_second"],
                                         mlx["decode_tokens_per_second"]),
                "ar_ttft_ratio": ratio(mine["ttft_seconds"], mlx["ttft_seconds"]),
                "auto_bad_decode_ratio": ratio(tree["decode_tokens_per_second"],
                                               mlx["decode_tokens_per_second"]),
                # whole answers (TTFT + decode): the draft's deferred prefill counts here
                "auto_bad_total_ratio": ratio(mlx["total_seconds"], tree["total_seconds"]),
                "auto_bad_draft_tree_only_decode_ratio": ratio(
                    alone["decode_tokens_per_second"], mlx["decode_tokens_per_second"]),
                "auto_bad_draft_tree_only_total_ratio": ratio(mlx["total_seconds"],
                                                              alone["total_seconds"]),
            })
    finally:
        resident.close()
    weights = sum(f.stat().st_size for f in Path(pair.target).glob("*.safetensors"))
    budget = int(weights * spec.stream_fraction)
    report(f"streamed at {spec.stream_fraction:.0%}: Canopy ar, tree (auto) with the bad draft")
    streamed = Session.load(pair.target, pair.bad_draft, budget_bytes=budget)
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
        "spec": vars(spec) | {"pair": pair.description},
        "rows": rows,
        "streamed": {
            "budget_bytes": budget, "ar": s_ar, "auto_bad": s_auto,
            "read_bandwidth_bytes_per_second": bandwidth,
            "layer_loop_bound_tokens_per_second": bound,
            "ar_to_bound": ratio(s_ar["decode_tokens_per_second"], bound),
            "auto_bad_to_ar": ratio(s_auto["decode_tokens_per_second"],
                                    s_ar["decode_tokens_per_second"]),
        },
    }


def speed_markdown(result: dict) -> str:
    """The result as a Markdown table plus the streamed figures."""
    lines = [
        "| prompt tokens | mlx-lm tok/s | Canopy ar tok/s | ratio | mlx-lm TTFT s | Canopy TTFT s "
        "| ratio | auto, bad draft tok/s | ratio to mlx-lm | whole answer, ratio "
        "| draft tree alone: ratio | whole answer, ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        m, c, t = r["mlx_lm"], r["canopy_ar"], r["canopy_auto_bad"]
        lines.append(
            f"| {r['prompt_tokens']} | {m['decode_tokens_per_second']:.2f} "
            f"| {c['decode_tokens_per_second']:.2f} | {r['ar_decode_ratio'] or 0:.2f} "
            f"| {m['ttft_seconds']:.2f} | {c['ttft_seconds']:.2f} | {r['ar_ttft_ratio'] or 0:.2f} "
            f"| {t['decode_tokens_per_second']:.2f} | {r['auto_bad_decode_ratio'] or 0:.2f} "
            f"| {r['auto_bad_total_ratio'] or 0:.2f} "
            f"| {r['auto_bad_draft_tree_only_decode_ratio'] or 0:.2f} "
            f"| {r['auto_bad_draft_tree_only_total_ratio'] or 0:.2f} |")
    s = result["streamed"]
    lines += [
        "",
        f"Streamed ({s['budget_bytes'] / 2**20:.0f} MiB budget): ar "
        f"{s['ar']['decode_tokens_per_second']:.2f} tok/s, layer-loop bound "
        f"{s['layer_loop_bound_tokens_per_second']:.2f} tok/s at "
        f"{s['read_bandwidth_bytes_per_second'] / 1e9:.2f} GB/s "
        f"(ratio {s['ar_to_bound'] or 0:.2f}); tree (auto) with the bad draft "
        f"{s['auto_bad']['decode_tokens_per_second']:.2f} tok/s "
        f"(ratio to streamed ar {s['auto_bad_to_ar'] or 0:.2f}).",
    ]
    return "\n".join(lines) + "\n"
