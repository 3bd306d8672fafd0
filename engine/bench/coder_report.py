"""`canopy bench --pair coder` outputs: coder.json (everything), coder.md (the table, the
goals, the cgroup rows, the Apple Silicon table with measured acceptance), coder.png."""

from __future__ import annotations

import json
from pathlib import Path

from .report import GB, _bytes, _clean, _load, _num, row_budget


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| configuration | budget | prompts × tokens | tok/s | × Canopy ar, same budget | "
        "tokens / target pass | mean tree nodes | bytes read / token | peak RSS | "
        "predicted tok/s | error | ids = resident ar |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        label = r["label"]
        if r["mode"] == "tree" and r.get("auto_ar_fraction"):
            label += f" — {r['auto_ar_fraction']:.0%} steps ar"
        lines.append(
            f"| {label} | {row_budget(r, 'GB')} | {r['prompts']} × {r['max_tokens']} | "
            f"{r['tokens_per_second']:.3f} | {_num(r['ratio_to_canopy_ar'])} | "
            f"{r['tokens_per_pass']:.2f} | {_num(r.get('mean_tree_nodes'), '.1f')} | "
            f"{_bytes(r['bytes_read_per_token'])} | {r['peak_rss_bytes'] / GB:.2f} GB | "
            f"{r['predicted_tokens_per_second']:.3f} | {_num(r['error_percent'], '+.0f')}% | "
            f"{r['ids_equal_ar']} |")
    return lines


def cgroup_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    limit = rows[0]["cgroup_limit_bytes"] / GB
    out = [f"### Inside a memory cgroup limited to {limit:.2f} GB (first prompt, own process)", "",
           "| configuration | budget | status | tok/s | tokens / target pass | peak RSS | "
           "cgroup high-water | ids = resident ar |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rss = r.get("peak_rss_bytes")
        peak = r.get("cgroup_peak_bytes")
        out.append(
            f"| {r['label']} | {r['budget']} | {r['status']} | "
            f"{_num(r.get('tokens_per_second'), '.3f')} | {_num(r.get('tokens_per_pass'))} | "
            f"{_num(rss and rss / GB)} GB | {_num(peak and peak / GB)} GB | "
            f"{r.get('ids_equal_ar', '–')} |")
    return out + [""]


def markdown(result: dict) -> str:
    env, spec, plan = result["environment"], result["spec"], result["plan"]
    quick = " (--quick, tiny random models: not a speed claim)" if spec["quick"] else ""
    lines = [
        f"## Benchmark: the coder pair{quick}",
        "",
        f"Run {env['date']} on {env['platform']} ({env['cpus']} CPUs, {env['device']}), MLX "
        f"{env['mlx']}, mlx-lm {env['mlx_lm']}, BLAS: {env['blas']}. Load average "
        f"{_load(env.get('load_average'))} at start, {_load(env.get('load_average_end'))} at "
        f"end. Pair: {result['pair']['description']}; target "
        f"{result['target_bytes'] / GB:.2f} GB, draft {result['draft_bytes'] / GB:.2f} GB.",
        f"Greedy, chat template, up to {spec['max_tokens']} new tokens per prompt; prompt "
        f"rounds per phase {plan['done']} (planned {plan['rounds']} for a "
        f"{spec['minutes']:g}-minute budget; streamed `ar` on at most "
        f"{spec['streamed_ar_prompts']} of them). Resident rows first (mlx-lm in its own "
        "process with its defaults, then Canopy, prompt by prompt), then each streamed budget "
        "with the resident target freed (peak RSS = that process's OS high-water mark during "
        "the row: draft + streamed target + overhead). × Canopy ar = ratio of tok/s on the "
        "prompts both rows ran (mlx-lm rows: to resident Canopy ar); predicted = the cost model "
        "calibrated at the start of this run on other prompts, error = (predicted − measured) "
        "/ measured.",
        "",
    ]
    lines += table(result["rows"]) + [""]
    lines += cgroup_lines(result["cgroup_rows"])
    lines += ["### Goals (issue 10)", ""]
    for name, g in result["goals"].items():
        m = g["measured"]
        shown = f"{m:.2f}" if isinstance(m, float) else str(m)
        lines.append(f"- {name}: {shown}{' (' + g['row'] + ')' if g.get('row') else ''} — "
                     f"**{'met' if g['met'] else 'not met'}**")
    lines += [
        "",
        f"mlx-lm num_draft_tokens sweep (calibration prompt, {spec['sweep_tokens']} tokens): "
        + ", ".join(f"{k}: {v:.3f} tok/s" for k, v in result["mlx_lm_sweep"].items())
        + f"; best k = {result['mlx_lm_best_k']}. Cost model MAPE {result['mape_percent']:.0f}% "
        f"over {len(result['rows'])} rows. Calibration {result['calibration_seconds']:.0f} s; "
        f"whole run {result['total_seconds'] / 60:.1f} min.",
    ]
    for f in result.get("failures", []):
        lines.append(f"- FAILED {f['config']}: {f['error'][:300]}")
    if result.get("apple_silicon_table"):
        lines += ["", result["apple_silicon_table"]]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(14, max(4.0, len(rows) * 0.32 + 1.5)))
    colors = {"ar": "#4c72b0", "chain": "#dd8452", "tree": "#55a868"}
    names = [f"{r['label']} · {r['budget']}" for r in rows]
    y = list(range(len(rows)))[::-1]
    col = ["#888888" if r["engine"] == "mlx-lm" else colors[r["mode"]] for r in rows]
    ax = axes[0]
    ax.barh(y, [r["tokens_per_second"] for r in rows], color=col, alpha=0.85, label="measured")
    ax.scatter([r["predicted_tokens_per_second"] for r in rows], y, marker="D", color="black",
               s=18, zorder=3, label="predicted")
    ax.set_xscale("log")
    ax.set_yticks(y, names, fontsize=7)
    ax.set_xlabel("decode tokens/s (log scale)")
    ax.set_title("speed")
    ax.legend(fontsize=7, loc="lower right")
    ax = axes[1]
    ax.barh(y, [r["tokens_per_pass"] for r in rows], color=col, alpha=0.85)
    ax.set_yticks(y, [""] * len(rows))
    ax.set_xlabel("tokens per target pass")
    ax.set_title("tokens per target pass")
    for a in axes:
        a.grid(axis="x", alpha=0.3)
    env = result["environment"]
    fig.suptitle(f"canopy bench --pair coder — {result['pair']['description'][:80]}\n"
                 f"{env['blas'][:90]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_coder_outputs(result: dict, out: Path) -> dict[str, Path]:
    paths = {"json": out / "coder.json", "markdown": out / "coder.md", "plot": out / "coder.png"}
    paths["json"].write_text(json.dumps(_clean(result), indent=1, default=str))
    paths["markdown"].write_text(markdown(result))
    plot(result, paths["plot"])
    return paths
