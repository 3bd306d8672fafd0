"""`canopy bench --speed`'s result (engine.bench.speed) as Markdown: the resident rows with
each ratio's range over the rounds, the fresh processes, the streamed figures."""

from __future__ import annotations


def speed_markdown(result: dict) -> str:
    """The result as a Markdown table plus the streamed figures."""
    env = result.get("environment") or {}
    load = [f"{x:.1f}" for x in (env.get("load_average") or [])[:1] + (
        env.get("load_average_end") or [])[:1]]
    lines = [
        f"{result['spec']['pair']}. Run {env.get('date', '?')}, load (1 min) "
        f"{' -> '.join(load) or '?'}, {env.get('blas', '?')}; "
        f"{result['spec']['max_tokens']} new tokens.",
        "",
        "| prompt tokens | mlx-lm tok/s | Canopy ar tok/s | ratio | mlx-lm TTFT s | Canopy TTFT s "
        "| ratio | auto, bad draft tok/s | ratio to mlx-lm | whole answer, ratio "
        "| draft tree alone: ratio | whole answer, ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        m, c, t = r["mlx_lm"], r["canopy_ar"], r["canopy_auto_bad"]
        lines.append(
            f"| {r['prompt_tokens']} | {m['decode_tokens_per_second']:.2f} "
            f"| {c['decode_tokens_per_second']:.2f} | {spread(r, 'ar_decode_ratio')} "
            f"| {m['ttft_seconds']:.2f} | {c['ttft_seconds']:.2f} "
            f"| {spread(r, 'ar_ttft_ratio')} "
            f"| {t['decode_tokens_per_second']:.2f} | {spread(r, 'auto_bad_decode_ratio')} "
            f"| {spread(r, 'auto_bad_total_ratio')} "
            f"| {spread(r, 'auto_bad_draft_tree_only_decode_ratio')} "
            f"| {spread(r, 'auto_bad_draft_tree_only_total_ratio')} |")
    spec = result["spec"]
    rounds = len(result["rows"][0].get("samples", [None])) if result["rows"] else 0
    first = result.get("first_auto_answer_decode_ratio")
    lines += ["", f"Figures are medians of {rounds} rounds; a ratio is the median of the rounds' "
              "own ratios (min–max in brackets); mlx-lm ran "
              + ("beside the loaded session, each round's run next to Canopy's."
                 if spec.get("interleaved") else "first, all rounds, while no Canopy model "
                 "was loaded.")
              + ("" if first is None else f" The session's first answer of tree (auto) with the "
                 f"bad draft (its draft-free branches had learned nothing yet): {first:.2f}× "
                 "mlx-lm decode.")]
    if any("ar_decode_ratio_in_process" in r for r in result["rows"]):
        decode = ", ".join(f"{r['prompt_tokens']} tokens "
                           f"{spread(r, 'ar_decode_ratio_in_process')}" for r in result["rows"])
        ttft = ", ".join(spread(r, "ar_ttft_ratio_in_process") for r in result["rows"])
        lines += ["", "Extra row, mlx-lm's stream_generate in Canopy's process on the same "
                  f"weights (the decode loops alone), Canopy ar over it: decode {decode}; "
                  f"TTFT {ttft}."]
    lines += fresh_markdown(result.get("fresh"))
    s = result["streamed"]
    to_bound = s["ar_to_bound"] or 0
    lines += [
        "",
        f"Streamed ({s['budget_bytes'] / 2**20:.0f} MiB budget): ar "
        f"{s['ar']['decode_tokens_per_second']:.2f} tok/s, layer-loop bound "
        f"{s['layer_loop_bound_tokens_per_second']:.2f} tok/s at "
        f"{s['read_bandwidth_bytes_per_second'] / 1e9:.2f} GB/s "
        f"(ratio {to_bound:.2f}, gap {(1 - to_bound) * 100:+.0f} %); tree (auto) with the bad "
        f"draft {s['auto_bad']['decode_tokens_per_second']:.2f} tok/s "
        f"(ratio to streamed ar {s['auto_bad_to_ar'] or 0:.2f}).",
    ]
    return "\n".join(lines) + "\n"


def spread(row: dict, name: str) -> str:
    """A ratio with the range of the rounds' own ratios."""
    value, span = row.get(name), row.get(name + "_range")
    if value is None:
        return "–"
    return f"{value:.2f}" if not span or span[0] == span[1] else (
        f"{value:.2f} ({span[0]:.2f}–{span[1]:.2f})")


def fresh_markdown(fresh: dict | None) -> list[str]:
    if not fresh:
        return []

    def figures(kind: str) -> str:
        rows = fresh[kind]
        decode = " / ".join(f"{r['decode_ratio'] or 0:.2f}" for r in rows)
        total = " / ".join(f"{r['total_ratio'] or 0:.2f}" for r in rows)
        return f"decode {decode}×, whole answer {total}× mlx-lm"

    return ["", f"Fresh processes, tree (auto) with the bad draft's tree alone, "
            f"{fresh['prompt_tokens']} "
            f"prompt tokens, per pair: no stored timing {figures('no_stored_timing')}; the "
            f"timing stored by the first {figures('stored_timing')}."]
