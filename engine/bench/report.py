"""Benchmark outputs: JSON (everything), a Markdown table, a PNG plot (matplotlib, Agg)."""

from __future__ import annotations

import json
import math
from pathlib import Path

MB = 2**20
GB = 1e9  # the coder pair's tables: decimal GB, as its issue states sizes


def _num(x, fmt: str = ".2f", none: str = "–") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return none
    return format(x, fmt)


def _bytes(n: float) -> str:
    return "0" if not n else f"{n / MB:.1f} MB"


def row_budget(r: dict, unit: str = "MB") -> str:
    """ "resident", or the budget's name with its size in MB (or GB: a 7 GB target's rows)."""
    if r["budget"] == "resident":
        return "resident"
    n = r["budget_bytes"]
    size = f"{n / GB:.2f} GB" if unit == "GB" else f"{n / MB:.0f} MB"
    return f"{r['budget']} ({size})"


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| configuration | budget | tok/s | × mlx-lm | tokens / pass | acceptance | "
        "bytes read / token | peak target resident | predicted tok/s | error | MAPE (prompts) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        acc = r["acceptance_depth1"]
        if acc is None:
            acc = r["draft_accepted_fraction"]
        label = r["label"]
        if r["mode"] == "tree" and r["auto_ar_fraction"]:
            label += f" — {r['auto_ar_fraction']:.0%} steps ar"
        lines.append(
            f"| {label} | {row_budget(r)} | {r['tokens_per_second']:.2f} | "
            f"{_num(r['ratio_to_mlx_lm'])} | {r['tokens_per_pass']:.2f} | {_num(acc)} | "
            f"{_bytes(r['bytes_read_per_token'])} | {_bytes(r['peak_target_resident_bytes'])} | "
            f"{r['predicted_tokens_per_second']:.2f} | {_num(r['error_percent'], '+.0f')}% | "
            f"{_num(r['mape_over_prompts'], '.0f')}% |"
        )
    return lines


def calibration_lines(result: dict) -> list[str]:
    out = []
    for name, cal in result["calibration"].items():
        t, a = cal["timing"], cal["acceptance"]
        e = a["tree_tokens"]
        picks = [n for n in (2, 5, 9, 17, 33, 48) if n <= len(e)]
        out.append(
            f"- {name}: d(1) {t['draft_forward']['seconds'][0] * 1e3:.1f} ms, c(1) "
            f"{t['layer_compute']['seconds'][0] * 1e3:.2f} ms/layer, h(1) "
            f"{t['head_compute']['seconds'][0] * 1e3:.1f} ms, bandwidth "
            f"{t['read_bandwidth'] / 1e9:.2f} GB/s in situ ({t['cold_read_bandwidth'] / 1e9:.2f} "
            f"cold), overheads per step {t['step_overhead'] * 1e3:.1f} (ar), "
            f"{(t['chain_overhead'] or 0) * 1e3:.1f} (chain), {(t['tree_overhead'] or 0) * 1e3:.1f}"
            f" (tree) ms; chain alpha "
            f"{', '.join(f'{x:.2f}' for x in a['chain_alpha'])}; tree E(N) "
            f"{', '.join(f'{n}: {e[n - 1]:.2f}' for n in picks)}"
        )
    return out


def markdown(result: dict) -> str:
    env, spec = result["environment"], result["spec"]
    rows = result["rows"]
    lines = [
        "## Benchmark"
        + (" (--quick, tiny random models: not a speed claim)" if spec["quick"] else ""),
        "",
        f"Run {env['date']} on {env['platform']} ({env['cpus']} CPUs, {env['device']}), "
        f"MLX {env['mlx']}, mlx-lm {env['mlx_lm']}, BLAS: {env['blas']}. Load average "
        f"{_load(env.get('load_average'))} at start, {_load(env.get('load_average_end'))} at end "
        "(a shared machine).",
        f"Pair: {result['pair']['description']}. Target {result['target_bytes'] / MB:.0f} MB.",
        f"{spec['prompts']} prompts (greedy), {spec['sampled_prompts']} (temperature 0.7), "
        f"{spec['bad_prompts']} (bad draft), up to {spec['max_tokens']} new tokens each, chat "
        "template; all configurations run prompt by prompt in one process. tok/s = decode "
        "tokens/s; × mlx-lm = ratio to mlx-lm's target alone in the same run and sampling; "
        "acceptance = P(the first draft token is accepted); bytes read / token = target bytes "
        "streamed per generated token; predicted = the cost model from a calibration on other "
        "prompts, error = (predicted − measured) / measured; MAPE (prompts) = mean |error| over "
        "the prompts' own speeds.",
        "",
    ]
    for sampling in ("greedy", "t=0.7"):
        lines += (
            [f"### {sampling}", ""]
            + table([r for r in rows if r["sampling"] == sampling and r["draft"] != "bad"])
            + [""]
        )
    lines += ["### Bad draft (tree auto should stay ≥ 0.95× ar)", ""]
    lines += table([r for r in rows if r["draft"] == "bad"]) + [""]
    for check in result["bad_draft_check"]:
        lines.append(
            f"- {check['budget']}: tree (auto) with the bad draft "
            f"{check['tree_auto_tokens_per_second']:.2f} tok/s vs ar "
            f"{check['ar_tokens_per_second']:.2f} on the same prompts: "
            f"{_num(check['ratio'])}× ({_num(check['auto_ar_fraction'], '.0%')} of steps ar)"
        )
    best, d = result["mlx_lm_best_k"], result["drift"]
    mp = d["median_probe"]
    lines += (
        [
            "",
            f"Cost model: MAPE {result['mape_percent']:.1f}% over the {len(rows)} configurations. "
            f"mlx-lm num_draft_tokens sweep (first {spec['sweep_prompts']} prompts): "
            + ", ".join(f"{k}: {v:.2f} tok/s" for k, v in result["mlx_lm_sweep"].items())
            + f"; best k = {best['greedy']} (greedy), {best['t=0.7']} (t=0.7). Calibration took "
            f"{result['calibration_seconds']:.0f} s, measuring {result['measure_seconds']:.0f} s, "
            f"total {result.get('total_seconds', 0):.0f} s.",
            "",
            "Calibration (curve shapes from micro-benchmarks, their level anchored to quick probes "
            "(a draft forward, a resident and a streamed 1-token pass) taken between runs: during "
            "calibration for the overheads, before every prompt for the predictions; median probe "
            f"draft {mp['draft'] * 1e3:.0f} ms, target {mp['target'] * 1e3:.0f} ms, storage "
            f"{d['bandwidth'] / 1e9:.2f} GB/s in situ, {d['probes']} probes):",
        ]
        + calibration_lines(result)
        + [
            f"- mlx-lm's own 1-token pass takes {result.get('mlx_lm_pass_ratio', 1.0):.2f}× "
            "Canopy's (measured on a calibration prompt): its rows are predicted at that level, "
            "without Canopy's per-step overheads."
        ]
    )
    if result.get("devices"):
        lines += ["", result["devices"]]
    return "\n".join(lines) + "\n"


def _load(x) -> str:
    return "?" if not x else "/".join(f"{v:.1f}" for v in x)


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [
        ("greedy", [r for r in result["rows"] if r["sampling"] == "greedy"]),
        ("temperature 0.7", [r for r in result["rows"] if r["sampling"] == "t=0.7"]),
    ]
    height = max(len(g) for _, g in groups) * 0.32 + 1.5
    fig, axes = plt.subplots(1, 2, figsize=(14, height), sharex=False)
    colors = {"mlx-lm": "#888888", "ar": "#4c72b0", "chain": "#dd8452", "tree": "#55a868"}
    for ax, (title, rows) in zip(axes, groups):
        names = [f"{r['label']} · {r['budget']}" for r in rows]
        y = list(range(len(rows)))[::-1]
        measured = [r["tokens_per_second"] for r in rows]
        predicted = [r["predicted_tokens_per_second"] for r in rows]
        col = [colors["mlx-lm"] if r["engine"] == "mlx-lm" else colors[r["mode"]] for r in rows]
        ax.barh(y, measured, color=col, alpha=0.85, label="measured")
        ax.scatter(predicted, y, marker="D", color="black", s=18, zorder=3, label="predicted")
        ax.set_yticks(y, names, fontsize=7)
        ax.set_xlabel("decode tokens/s")
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    env = result["environment"]
    fig.suptitle(
        f"canopy bench — {result['pair']['description'][:90]}\n{env['blas'][:90]}", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _clean(x):
    """NaN/inf -> None (valid JSON)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def write_outputs(result: dict, out: Path) -> dict[str, Path]:
    from ..costmodel.devices import device_table_markdown

    result.setdefault("devices", device_table_markdown())
    paths = {"json": out / "bench.json", "markdown": out / "bench.md", "plot": out / "bench.png"}
    paths["json"].write_text(json.dumps(_clean(result), indent=1, default=str))
    paths["markdown"].write_text(markdown(result))
    plot(result, paths["plot"])
    return paths
