"""Drafts without a draft model (issue 12): prompt lookup, lookahead, the merged tree.

One run, per budget (resident, then the target streamed at a fraction of its layer bytes), per
task of resources/draft_free_prompts.json (code edit, summarization, question answering over a
given passage, open chat), per prompt: every mode back to back on the same prompt, greedy,
so tokens/s ratios to `ar` are measured side by side:
- ar: the target alone;
- lookahead: Jacobi window + n-gram pool, target alone;
- prompt lookup: `tree` mode without a draft model, prompt lookup branches alone;
- draft-free tree: `tree` mode without a draft model as users get it (prompt lookup + n-gram
  pool);
- draft tree: the draft model's tree (auto policy), no draft-free branches;
- merged tree: the draft model's tree with prompt lookup and n-gram pool branches (the default).
Tokens per target pass are hardware-free; every mode must emit `ar`'s ids (lossless), a row
that does not is marked and counted. Greedy ids do not depend on the budget, so a run may take
`ar`'s ids from an earlier run of the same pair (`ar_ids`): its own `ar` then generates only
`AR_PROBE_TOKENS` tokens, for the tok/s ratio (a streamed big target's `ar` is the slowest row).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import (
    DRAFT_FREE_AR_PROBE_TOKENS,
    DRAFT_FREE_FRACTIONS,
    DRAFT_FREE_MAX_TOKENS,
    GenerationConfig,
    LookupConfig,
)
from ..events import Finished
from .copy_bound import copy_bound
from .pair import Pair, Report

MB = 2**20
PROMPTS_FILE = Path(__file__).resolve().parents[2] / "resources" / "draft_free_prompts.json"
MODES = ("ar", "lookahead", "prompt lookup", "draft-free tree", "draft tree", "merged tree")
NO_DRAFT = ("prompt lookup", "lookahead", "draft-free tree")  # the goal without a draft model
NEEDS_DRAFT = {"draft tree", "merged tree"}


@dataclass(frozen=True)
class DraftFreeSpec:
    max_tokens: int = DRAFT_FREE_MAX_TOKENS
    prompts_per_task: int | None = None  # None: all of them
    # float: a fraction of the layer bytes (+ the rest of the target); int: bytes; None: resident
    fractions: tuple[float | int | None, ...] = DRAFT_FREE_FRACTIONS
    tasks: tuple[str, ...] | None = None  # None: every task in the prompt file
    modes: tuple[str, ...] = MODES  # ar always runs (every mode is checked against its ids)
    # (task, prompt index) -> ar's greedy ids from an earlier run of the same pair; None: run ar
    ar_ids: dict[tuple[str, int], list[int]] | None = None

    def __post_init__(self):
        for f in self.fractions:
            if isinstance(f, float) and not 0.0 < f <= 1.0:
                raise ValueError(f"a budget must be 'resident' or a fraction in (0, 1], not {f}")
            if isinstance(f, int) and f < 1:
                raise ValueError(f"a budget in MB must be more than 0, not {f / MB:g}")
        if self.max_tokens < 1:
            raise ValueError(f"--max-tokens must be at least 1, not {self.max_tokens}")
        unknown = [m for m in self.modes if m not in MODES]
        if unknown:
            raise ValueError(f"--modes: unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
        if self.prompts_per_task is not None and self.prompts_per_task < 1:
            raise ValueError(f"--prompts must be at least 1, not {self.prompts_per_task}")


def load_prompts(spec: DraftFreeSpec, path: Path = PROMPTS_FILE) -> dict[str, list[str]]:
    tasks = json.loads(path.read_text())["tasks"]
    chosen = spec.tasks or tuple(tasks)
    unknown = [t for t in chosen if t not in tasks]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; the prompt file has {sorted(tasks)}")
    return {t: tasks[t][: spec.prompts_per_task] for t in chosen}


def parse_budgets(text: str) -> tuple[float | int | None, ...]:
    """'resident,50%' (or '0.5') -> (None, 0.5); '3390MB' -> 3390 MiB in bytes."""
    out: list[float | int | None] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "resident":
            out.append(None)
            continue
        try:
            if part.upper().endswith("MB"):
                out.append(int(float(part[:-2]) * MB))
            else:
                out.append(float(part[:-1]) / 100 if part.endswith("%") else float(part))
        except ValueError:
            raise ValueError(f"--budgets: {part!r} is neither 'resident' nor a fraction such as "
                             "50% or 0.5 nor MB such as 3390MB") from None
    if not out:
        raise ValueError("--budgets needs at least one budget, e.g. resident,50%")
    return tuple(out)


def load_ar_ids(path: Path) -> dict[tuple[str, int], list[int]]:
    """ar's ids per (task, prompt) stored by an earlier run in its draft_free.json."""
    try:
        stored = json.loads(Path(path).read_text()).get("ar_ids")
    except (OSError, ValueError) as e:
        raise ValueError(f"--ar-ids: cannot read {path} ({e})") from None
    if not stored:
        raise ValueError(f"--ar-ids: {path} holds no ar ids (a draft_free.json of this version "
                         "of canopy bench --draft-free has them)")
    return {(r["task"], r["prompt"]): r["token_ids"] for r in stored}


def mode_config(mode: str, max_tokens: int) -> GenerationConfig:
    kw = {
        "ar": dict(mode="ar"),
        "lookahead": dict(mode="lookahead"),
        "prompt lookup": dict(mode="tree", lookup=LookupConfig(sources=("prompt",))),
        "draft-free tree": dict(mode="tree"),
        "draft tree": dict(mode="tree", lookup=LookupConfig(sources=())),
        "merged tree": dict(mode="tree"),
    }[mode]
    return GenerationConfig(max_tokens=max_tokens, **kw)


def budget_label(fraction: float | int | None) -> str:
    if fraction is None:
        return "resident"
    return f"{fraction / MB:.0f} MB" if isinstance(fraction, int) else f"{fraction:.0%}"


def budget_for(target: Path, fraction: float | int | None) -> int | None:
    """Non-layer bytes + `fraction` of the layer bytes (None: resident; an int: those bytes)."""
    if fraction is None or isinstance(fraction, int):
        return fraction
    from ..streaming import weights

    index = weights.index_model(target)
    layers = sum(index.layer_bytes(i) for i in range(len(index.layers)))
    return sum(t.length for t in index.other) + int(fraction * layers)


def run_one(session, ids: list[int], config: GenerationConfig) -> dict:
    fin = None
    for event in session.generate(ids, config):
        if isinstance(event, Finished):
            fin = event
    if fin is None:
        raise RuntimeError("generation ended without a result")
    st = fin.stats
    return {
        "token_ids": list(fin.token_ids),
        "tokens": st.generated_tokens,
        "passes": st.target_passes,
        "decode_seconds": st.decode_seconds,
        "proposed_by_source": st.extra.get("proposed_by_source", {}),
        "accepted_by_source": st.extra.get("accepted_by_source", {}),
    }


def run_draft_free(pair: Pair, spec: DraftFreeSpec, report: Report = lambda text: None,
                   partial: Callable[[dict], None] = lambda result: None) -> dict:
    """Per (budget, prompt, task, mode) one run; rows aggregated per (budget, task, mode).

    Prompts go round the tasks (every task's first prompt, then the second ...), and
    `partial(result so far)` is called after each prompt, so a run cut short keeps every task.
    """
    from ..session import Session

    prompts = load_prompts(spec)
    runs: list[dict] = []
    ar_ids = dict(spec.ar_ids or {})
    prompt_ids: dict[tuple[str, int], list[int]] = {}
    max_len = LookupConfig().max_continuation

    def result() -> dict:
        spec_out = {k: v for k, v in vars(spec).items() if k != "ar_ids"}
        answered = [key for key in prompt_ids if key in ar_ids]
        bounds = {task: copy_bound([(prompt_ids[k], ar_ids[k][: spec.max_tokens]) for k in answered
                                    if k[0] == task], max_len)
                  for task in dict.fromkeys(t for t, _ in answered)}
        return {"spec": spec_out | {"pair": pair.description}, "rows": aggregate(runs),
                "runs": runs, "lossless": all(r["lossless"] for r in runs),
                "copy_bounds": bounds,
                "ar_ids": [{"task": t, "prompt": k, "token_ids": ids}
                           for (t, k), ids in ar_ids.items()]}

    order = [(task, k) for k in range(max(map(len, prompts.values()), default=0))
             for task in prompts if k < len(prompts[task])]
    for fraction in spec.fractions:
        label = budget_label(fraction)
        budget = budget_for(Path(pair.target), fraction)
        with_draft = Session.load(pair.target, pair.draft, budget_bytes=budget)
        alone = Session(with_draft.target)  # the same target weights: one copy in memory
        try:
            warm = alone.encode_chat([{"role": "user", "content": "Hello"}])
            run_one(alone, warm, mode_config("ar", 4))  # first-call compilation off the clock
            for task, k in order:
                report(f"{label}: {task} {k + 1}/{len(prompts[task])}")
                ids = prompt_ids[(task, k)] = alone.encode_chat(
                    [{"role": "user", "content": prompts[task][k]}])
                known = ar_ids.get((task, k))
                for mode in ("ar", *(m for m in MODES if m in spec.modes and m != "ar")):
                    session = with_draft if mode in NEEDS_DRAFT else alone
                    tokens = spec.max_tokens
                    if mode == "ar" and known is not None:
                        tokens = min(tokens, DRAFT_FREE_AR_PROBE_TOKENS)
                    r = run_one(session, ids, mode_config(mode, tokens))
                    if mode == "ar" and known is None:
                        known = ar_ids[(task, k)] = r["token_ids"]
                    out = r.pop("token_ids")
                    r["lossless"] = out == known[: len(out)] and (
                        len(out) == len(known) or len(out) == tokens)
                    runs.append({"budget": label, "task": task, "prompt": k, "mode": mode}
                                | r)
                partial(result())
        finally:
            with_draft.close()
    return result()


def aggregate(runs: list[dict]) -> list[dict]:
    """Per (budget, task, mode): tokens per pass and tokens/s over all its prompts, and tokens/s
    as a ratio to `ar` over the same prompts."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["budget"], r["task"], r["mode"]), []).append(r)
    rows = []
    for (budget, task, mode), rs in groups.items():
        tokens, passes = sum(r["tokens"] for r in rs), sum(r["passes"] for r in rs)
        seconds = sum(r["decode_seconds"] for r in rs)
        accepted: dict[str, int] = {}
        proposed: dict[str, int] = {}
        for r in rs:
            for s, n in r["accepted_by_source"].items():
                accepted[s] = accepted.get(s, 0) + n
            for s, n in r["proposed_by_source"].items():
                proposed[s] = proposed.get(s, 0) + n
        rows.append({"budget": budget, "task": task, "mode": mode, "prompts": len(rs),
                     "tokens": tokens, "passes": passes,
                     "tokens_per_pass": tokens / passes if passes else 0.0,
                     "tokens_per_second": tokens / seconds if seconds else 0.0,
                     "accepted_by_source": accepted, "proposed_by_source": proposed,
                     "lossless": all(r["lossless"] for r in rs)})
    ar = {(r["budget"], r["task"]): r["tokens_per_second"] for r in rows if r["mode"] == "ar"}
    for r in rows:
        base = ar.get((r["budget"], r["task"]))
        r["speed_vs_ar"] = r["tokens_per_second"] / base if base else None
    return rows


def goals(rows: list[dict]) -> list[dict]:
    """Issue 12's goals per budget: code edit / summarization >= 2 tokens per pass with no draft
    model (the best of prompt lookup, lookahead and the draft-free tree); the merged tree >= the
    draft tree on every task and >= 1.3x its tokens per pass on code edit / summarization."""
    tpp = {(r["budget"], r["task"], r["mode"]): r["tokens_per_pass"] for r in rows}
    out = []
    for budget, task in dict.fromkeys((r["budget"], r["task"]) for r in rows):
        copy_task = task in ("code edit", "summarization")
        free = max(tpp.get((budget, task, m), 0.0) for m in NO_DRAFT)
        merged, tree = tpp.get((budget, task, "merged tree")), tpp.get((budget, task, "draft tree"))
        need = 1.3 if copy_task else 1.0
        out.append({"budget": budget, "task": task, "no_draft_tokens_per_pass": free,
                    "no_draft_goal": free >= 2.0 if copy_task else None,
                    "merged_over_tree": merged / tree if merged and tree else None,
                    "merged_goal": (merged / tree >= need) if merged and tree else None})
    return out


def draft_free_markdown(result: dict) -> str:
    rows = result["rows"]
    lines = ["| budget | task | mode | tokens/pass | tok/s | × ar tok/s | accepted/proposed by "
             "source | lossless |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        by = ", ".join(f"{s} {r['accepted_by_source'].get(s, 0)}/{n}"
                       for s, n in sorted(r["proposed_by_source"].items()))
        lines.append(f"| {r['budget']} | {r['task']} | {r['mode']} | {r['tokens_per_pass']:.2f} "
                     f"| {r['tokens_per_second']:.2f} | {r['speed_vs_ar'] or 0:.2f} | {by} "
                     f"| {'yes' if r['lossless'] else 'NO'} |")
    bounds = result.get("copy_bounds", {})
    lines += ["", "| budget | task | no draft model: tokens/pass | goal ≥ 2 | copy bound: "
              "n-gram keyed / any start | merged / draft tree tokens/pass | goal |",
              "|---|---|---|---|---|---|---|"]

    def mark(ok):
        return "–" if ok is None else ("met" if ok else "not met")

    for g in goals(rows):
        ratio = g["merged_over_tree"]
        need = "≥ 1.3" if g["task"] in ("code edit", "summarization") else "≥ 1"
        b = bounds.get(g["task"])
        bound = "–" if b is None else (f"{b['keyed_tokens_per_pass']:.2f} / "
                                       f"{b['unkeyed_tokens_per_pass']:.2f}")
        lines.append(f"| {g['budget']} | {g['task']} | {g['no_draft_tokens_per_pass']:.2f} "
                     f"| {mark(g['no_draft_goal'])} | {bound} "
                     f"| {'–' if ratio is None else f'{ratio:.2f}'} "
                     f"| {need}: {mark(g['merged_goal'])} |")
    lines += ["", f"{result['spec']['pair']}; greedy, up to {result['spec']['max_tokens']} new "
              f"tokens per prompt; every mode {'emitted' if result['lossless'] else 'did NOT emit'}"
              " ar's tokens. Copy bound (engine.bench.copy_bound): tokens per pass of an oracle "
              "that copies from the prompt and answer so far the continuation the target "
              "accepts furthest (up to a branch's length), after a 1-token match or from any "
              "start, on ar's answers."]
    return "\n".join(lines) + "\n"
