"""The coder run's rows: measured summaries with ratios on shared prompts, the cost model's
prediction and error, output ids against resident `ar`, the issue's goals, and the Apple Silicon
table recomputed with the acceptance this pair measured."""

from __future__ import annotations

from dataclasses import asdict

from ..costmodel import formulas as cm
from .coder_plan import tokens_for
from .runs import Aggregate, Config


def same_prompts(agg: Aggregate, prompts: set[int]) -> Aggregate:
    return Aggregate(agg.config, [s for s in agg.samples if s.prompt in prompts])


def ratio_on_shared(agg: Aggregate, base: Aggregate | None) -> float | None:
    """tok/s of `agg` over tok/s of `base`, both on the prompts both ran."""
    if base is None or base is agg:
        return 1.0 if base is agg else None
    shared = {s.prompt for s in agg.samples} & {s.prompt for s in base.samples}
    if not shared:
        return None
    a, b = same_prompts(agg, shared).tokens_per_second, same_prompts(base, shared).tokens_per_second
    return a / b if b else None


def measured_rows(run) -> list[dict]:
    results, rows = run.results, []
    ar_key = {b: Config("canopy", "ar", b, "greedy", draft="none").key
              for b in run.budgets}
    mlx_spec = next((a for a in results.values()
                     if a.config.engine == "mlx-lm" and a.config.mode == "chain"), None)
    for agg in results.values():
        cfg = agg.config
        row = agg.summary()
        pred = run.predicted(cfg)
        row["budget_bytes"] = run.budgets[cfg.budget] or run.target_bytes
        row["max_tokens"] = tokens_for(run.spec, cfg)
        row["predicted"] = pred.to_dict()
        row["predicted_tokens_per_second"] = pred.tokens_per_second
        row["error_percent"] = cm.percentage_error(pred.tokens_per_second,
                                                   row["tokens_per_second"])
        base = results.get(ar_key["resident" if cfg.engine == "mlx-lm" else cfg.budget])
        row["ratio_to_canopy_ar"] = ratio_on_shared(agg, base)
        row["ratio_to_mlx_lm_speculative"] = ratio_on_shared(agg, mlx_spec)
        # streamed ar runs fewer tokens: its ids are compared with resident ar's first ones
        same = [bool(s.ids) and s.ids == run.ar_ids[s.prompt][: len(s.ids)]
                for s in agg.samples if s.prompt in run.ar_ids]
        row["ids_equal_ar"] = f"{sum(same)}/{len(same)}"
        row["prompt_indices"] = [s.prompt for s in agg.samples]
        rows.append(row)
    return rows


def goals(rows: list[dict], cgroup: list[dict]) -> dict:
    """The issue's goals, each with the measured figure and whether it was met."""
    def pick(budget, mode, engine="canopy"):
        return [r for r in rows if r["budget"] == budget and r["mode"] == mode
                and r["engine"] == engine]

    def best(name, candidates, key, at_least, label=lambda r: r["label"]):
        """Goal `name`: the candidate row with the highest `key`, met when it reaches
        `at_least` (a row without the figure counts as 0)."""
        if candidates:
            top = max(candidates, key=lambda r: r[key] or 0)
            out[name] = {"measured": top[key], "row": label(top),
                         "met": (top[key] or 0) >= at_least}

    out = {}
    best("streamed 50%: tree >= 5x Canopy ar", pick("50%", "tree"), "ratio_to_canopy_ar", 5.0)
    best("streamed: >= 6 tokens per target pass", pick("50%", "tree") + pick("25%", "tree"),
         "tokens_per_pass", 6.0, label=lambda r: f"{r['label']} at {r['budget']}")
    best("resident: tree >= 1.3x mlx-lm speculative", pick("resident", "tree"),
         "ratio_to_mlx_lm_speculative", 1.3)
    by_engine = {r["engine"]: r for r in cgroup}
    if "mlx-lm" in by_engine and "canopy" in by_engine:
        m, c = by_engine["mlx-lm"], by_engine["canopy"]
        out["cgroup: resident target killed, streamed completes with ar's ids"] = {
            "measured": f"target alone: {m['status']}; Canopy streamed: {c['status']}, ids "
                        f"equal: {c.get('ids_equal_ar')}",
            "met": m["status"].startswith("killed") and c["status"] == "completed"
            and c.get("ids_equal_ar") is True}
    return out


def coder_result(run, env: dict, cgroup: list[dict]) -> dict:
    from ..costmodel import devices

    rows = measured_rows(run)
    acc = run.measured_acceptance()
    apple = devices.device_table_markdown(
        acceptance=acc, about="this run's measured acceptance (Qwen2.5-Coder 0.5B drafting for "
        "1.5B, greedy, code prompts)") if acc else None
    return {
        "environment": env,
        "pair": {k: str(v) for k, v in asdict(run.pair).items()},
        "spec": asdict(run.spec),
        "stream": asdict(run.stream),
        "budgets_bytes": run.budgets,
        "target_bytes": run.target_bytes,
        "draft_bytes": run.draft_bytes,
        "prompt_categories": run.categories,
        "plan": {"rounds": run.rounds, "done": run.done,
                 "predicted_round_seconds": run.round_costs,
                 "measured_over_predicted_seconds": run.clock.scale},
        "calibration": run.cal.to_dict(),
        "calibration_seconds": run.calibration_seconds,
        "mlx_lm_sweep": run.sweep,
        "mlx_lm_best_k": run.best_k,
        "mlx_lm_pass_seconds": run.mlx_pass,
        "rows": rows,
        "cgroup_rows": cgroup,
        "goals": goals(rows, cgroup),
        "measured_acceptance": acc.to_dict() if acc else None,
        "apple_silicon_table": apple,
        "failures": run.failures,
        "mape_percent": cm.mape([(r["predicted_tokens_per_second"], r["tokens_per_second"])
                                 for r in rows]),
        "total_seconds": run.clock.elapsed(),
    }
