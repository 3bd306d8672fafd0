"""`canopy bench`: Canopy against mlx-lm, side by side in one process, with the cost model's
prediction for every configuration.

Order of a run: load the pair (resident, streamed at 50% and 25% of the target's bytes, and
mlx-lm's own load of the same folders); calibrate the cost model (timing, then acceptance on
calibration prompts that are never measured); sweep mlx-lm's num_draft_tokens on the first
prompts and keep the best; then, prompt by prompt, run every configuration, so that drift of a
shared machine hits all of them alike. Outputs JSON, a Markdown table and a PNG plot
(engine.bench.report).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..config import BENCH_MAX_TOKENS, BENCH_PROMPTS, SamplingConfig, StreamConfig, TreeConfig
from ..costmodel import formulas as cm
from ..costmodel.calibrate import calibrate
from ..costmodel.drift import DriftProbe, anchored, median_probe
from ..costmodel.measure import measure_timing
from .environment import env_load, environment
from .pair import Pair, Report
from .runs import BUDGETS, FRACTIONS, Aggregate, Config, run_canopy, run_mlx_lm

PROMPTS_FILE = Path(__file__).resolve().parents[2] / "resources" / "bench_prompts.json"


@dataclass(frozen=True)
class BenchSpec:
    prompts: int  # greedy: every configuration
    sampled_prompts: int  # temperature 0.7
    bad_prompts: int  # the bad-draft check
    max_tokens: int
    sweep_ks: tuple[int, ...]  # mlx-lm num_draft_tokens tried
    sweep_prompts: int
    chain_k: int
    calibration_prompts: int
    calibration_tokens: int
    quick: bool = False

    @classmethod
    def quick_run(cls) -> BenchSpec:
        return cls(4, 2, 3, 16, (1, 2, 3), 2, 4, 1, 16, quick=True)

    @classmethod
    def full_run(cls, prompts: int | None = None, max_tokens: int | None = None) -> BenchSpec:
        for name, value in (("prompts", prompts), ("max-tokens", max_tokens)):
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be at least 1, not {value}")
        p = prompts or BENCH_PROMPTS
        return cls(p, max(1, p // 2), max(1, p // 2), max_tokens or BENCH_MAX_TOKENS,
                   (1, 2, 3, 4), 3, 4, 3, 24)


def budget_bytes(timing: cm.Timing, budget: str) -> int | None:
    """A fraction of the target's bytes, never below what the layer store needs."""
    fraction = FRACTIONS[budget]
    if fraction is None:
        return None
    need = timing.base_bytes + max(timing.layer_bytes) + 1
    return max(int(fraction * timing.target_bytes), need)


def build_configs(spec: BenchSpec, best_k: dict[str, int]) -> list[Config]:
    out = []
    for sampling in ("greedy", "t=0.7"):
        out += [
            Config("mlx-lm", "ar", "resident", sampling, draft="none"),
            Config("mlx-lm", "chain", "resident", sampling, k=best_k[sampling]),
        ]
        for budget in BUDGETS:
            out += [
                Config("canopy", "ar", budget, sampling, draft="none"),
                Config("canopy", "chain", budget, sampling, k=spec.chain_k),
                Config("canopy", "tree", budget, sampling),
            ]
            if budget != "resident":
                out.append(Config("canopy", "tree", budget, sampling, pipeline=True))
    out += [Config("canopy", "tree", b, "greedy", draft="bad") for b in ("resident", "50%")]
    return out


def prompt_count(spec: BenchSpec, cfg: Config) -> int:
    if cfg.draft == "bad":
        return spec.bad_prompts
    return spec.prompts if cfg.sampling == "greedy" else spec.sampled_prompts


def predict(
    cfg: Config, cals: dict, budget: int | None, tokens: int, mlx_pass: float | None = None
) -> cm.Prediction:
    """The cost model's tokens/s for one configuration; tree (auto) over a `tokens`-long
    generation, warm-up included (costmodel.auto_generation). mlx-lm rows: compute and draft
    levels scaled so that a 1-token pass takes `mlx_pass` seconds (measured relative to Canopy's
    pass during calibration)."""
    cal = cals[(cfg.sampling, "bad" if cfg.draft == "bad" else "good")]
    timing = cal.timing
    if cfg.engine == "mlx-lm":  # its own loop: no Canopy per-step overheads
        f = 1.0
        if mlx_pass is not None:
            f = mlx_pass / cm.pass_seconds(timing, 1, None, 0.0).seconds
        timing = replace(
            timing,
            step_overhead=0.0,
            node_overhead=0.0,
            chain_overhead=0.0,
            chain_draft_scale=1.0,
            layer_compute=timing.layer_compute.scaled(f),
            head_compute=timing.head_compute.scaled(f),
            draft_forward=timing.draft_forward.scaled(f),
        )
    tree = TreeConfig()
    if cfg.mode == "tree" and cfg.nodes:  # a fixed node budget: no policy, that tree each step
        return cm.predict(timing, cal.acceptance, "tree", budget_bytes=budget, nodes=cfg.nodes,
                          expand_width=tree.expand_width, pipeline=cfg.pipeline,
                          max_forwards=tree.max_forwards)
    if cfg.mode == "tree":  # the run's own tree settings: the policy that runs is simulated
        return cm.auto_generation(
            timing,
            cal.acceptance,
            tokens,
            budget_bytes=budget,
            pipeline=cfg.pipeline,
            expand_width=tree.expand_width,
            max_forwards=tree.max_forwards,
            auto_max_nodes=tree.auto_max_nodes,
        )
    return cm.predict(timing, cal.acceptance, cfg.mode, budget_bytes=budget, k=cfg.k)


@dataclass
class Loaded:
    """Everything a run measures with: Canopy sessions by (budget, draft) and mlx-lm's models."""

    resident: object  # Session: resident target + good draft
    bad: object  # Session: resident target + bad draft
    mlx_target: object
    mlx_tokenizer: object
    mlx_draft: object
    sessions: dict = field(default_factory=dict)  # (budget, "good" | "bad") -> Session
    streamed: dict = field(default_factory=dict)  # budget -> streamed target

    def close(self) -> None:
        for target in self.streamed.values():
            target.close()


@dataclass
class Calibration:
    timing: cm.Timing
    probe: object  # DriftProbe
    probe_budget: int
    cals: dict  # (sampling, "good" | "bad") -> calibrate() result
    mlx_ratio: float  # mlx-lm's 1-token pass relative to Canopy's
    seconds: float


def load_pair(pair: Pair, report: Report) -> Loaded:
    import mlx_lm

    from ..formats.loader import load_model
    from ..session import Session

    report(f"loading {pair.target} and {pair.draft} (Canopy and mlx-lm)")
    draft, bad = load_model(pair.draft), load_model(pair.bad_draft)
    resident = Session(load_model(pair.target), draft)
    mlx_target, mlx_tok = mlx_lm.load(str(pair.target))
    mlx_draft, _ = mlx_lm.load(str(pair.draft))
    return Loaded(resident, Session(resident.target, bad), mlx_target, mlx_tok, mlx_draft,
                  sessions={("resident", "good"): resident})


def calibrate_models(pair: Pair, spec: BenchSpec, m: Loaded, calib: list[list[int]],
                     report: Report) -> Calibration:
    """Timing, drift probe, acceptance per sampling and draft, and mlx-lm's pass level."""
    t0 = time.perf_counter()
    report("calibrating the cost model: timing")
    draft_model = m.resident.draft.model
    timing = measure_timing(pair.target, draft_model, in_situ=False)
    probe_budget = timing.base_bytes + (timing.prefetch + 1) * max(timing.layer_bytes)
    probe = DriftProbe(m.resident.target.model, draft_model, pair.target, probe_budget)
    timing = anchored(timing, probe.measure(), probe_budget)
    cals = {}
    for sampling, temp in (("greedy", 0.0), ("t=0.7", 0.7)):
        report(f"calibrating the cost model: acceptance and overheads, {sampling}")
        cals[(sampling, "good")] = calibrate(
            m.resident, calib, timing, SamplingConfig(temp), spec.calibration_tokens, probe=probe
        )
    report("calibrating the cost model: the bad draft")
    cals[("greedy", "bad")] = calibrate(
        m.bad, calib, timing, SamplingConfig(), spec.calibration_tokens, probe=probe
    )
    # mlx-lm runs its own forward (async evaluation, no tree positions): its level relative to
    # Canopy's 1-token pass, measured on a calibration prompt next to a probe
    target_bytes = m.resident.target.nbytes()
    mlx_cfg = Config("mlx-lm", "ar", "resident", "greedy", draft="none")
    ratios = []
    for ids in calib:
        sample = run_mlx_lm(m.mlx_target, m.mlx_tokenizer, None, ids, mlx_cfg,
                            spec.calibration_tokens, 0, target_bytes)
        ratios.append(sample.seconds / max(1, sample.tokens - 1) / probe.measure().target)
    mlx_ratio = float(sorted(ratios)[len(ratios) // 2])
    return Calibration(timing, probe, probe_budget, cals, mlx_ratio, time.perf_counter() - t0)


def load_streamed(pair: Pair, m: Loaded, budgets: dict, stream: StreamConfig) -> None:
    """The target streamed under each budget, paired with the good and the bad draft."""
    from ..session import Session
    from ..streaming.streamed_model import load_streamed_model

    m.sessions[("resident", "bad")] = m.bad
    for b, nbytes in budgets.items():
        if nbytes is None:
            continue
        target = load_streamed_model(pair.target, nbytes, prefetch=stream.prefetch,
                                     bypass_cache=stream.bypass_cache)
        m.streamed[b] = target
        m.sessions[(b, "good")] = Session(target, m.resident.draft)
        m.sessions[(b, "bad")] = Session(target, m.bad.draft)


def sweep_mlx_lm(spec: BenchSpec, run, report: Report) -> tuple[dict, dict]:
    """mlx-lm's num_draft_tokens on the first prompts: tokens/s per k, and the best k."""
    sweep, best_k = {}, {}
    for sampling in ("greedy", "t=0.7"):
        for k in spec.sweep_ks:
            cfg = Config("mlx-lm", "chain", "resident", sampling, k=k)
            agg = Aggregate(cfg, [run(cfg, i) for i in range(spec.sweep_prompts)])
            sweep[f"{sampling} k={k}"] = agg.tokens_per_second
            report(f"mlx-lm sweep {sampling} k={k}: {agg.tokens_per_second:.2f} tok/s")
        best_k[sampling] = max(spec.sweep_ks, key=lambda k: sweep[f"{sampling} k={k}"])
    return sweep, best_k


def measure_configs(spec: BenchSpec, configs: list[Config], run, probe,
                    report: Report) -> tuple[dict, list, float]:
    """Prompt by prompt, every configuration (drift hits all alike); a probe between prompts."""
    results = {c.key: Aggregate(c, []) for c in configs}
    t1 = time.perf_counter()
    probes = []
    for i in range(spec.prompts):
        probes.append(probe.measure())
        for cfg in configs:
            if i < prompt_count(spec, cfg):
                sample = run(cfg, i)
                results[cfg.key].samples.append(sample)
                report(f"[{i + 1}/{spec.prompts}] {cfg.key}: {sample.rate:.2f} tok/s, "
                       f"{sample.tokens} tokens")
    seconds = time.perf_counter() - t1
    probes.append(probe.measure())
    return results, probes, seconds


def prediction_rows(spec: BenchSpec, configs: list[Config], results: dict, cal: Calibration,
                    adjusted: dict, budgets: dict, target_bytes: int, run_probe) -> list[dict]:
    """Measured summary per configuration with the cost model's prediction and its error."""
    rows = []
    for cfg in configs:
        row = results[cfg.key].summary()
        pred = predict(cfg, adjusted, budgets[cfg.budget], spec.max_tokens,
                       cal.mlx_ratio * run_probe.target)
        row["predicted_at_calibration"] = predict(
            cfg, cal.cals, budgets[cfg.budget], spec.max_tokens
        ).tokens_per_second
        row["budget_bytes"] = budgets[cfg.budget] or target_bytes
        row["predicted"] = pred.to_dict()
        row["predicted_tokens_per_second"] = pred.tokens_per_second
        row["error_percent"] = cm.percentage_error(pred.tokens_per_second, row["tokens_per_second"])
        row["mape_over_prompts"] = cm.mape(
            [(pred.tokens_per_second, r) for r in row["per_prompt_tokens_per_second"]]
        )
        rows.append(row)
    baseline = {
        r["sampling"]: r["tokens_per_second"]
        for r in rows
        if r["engine"] == "mlx-lm" and r["mode"] == "ar"
    }
    for r in rows:
        base = baseline.get(r["sampling"])
        r["ratio_to_mlx_lm"] = r["tokens_per_second"] / base if base else None
    return rows


def run_bench(pair: Pair, spec: BenchSpec, stream: StreamConfig | None = None,
              report: Report = lambda text: None) -> dict:
    """One whole benchmark run (see the module docstring); returns the JSON-ready result."""
    env = environment()
    texts = json.loads(PROMPTS_FILE.read_text())
    m = load_pair(pair, report)

    def encode(text: str) -> list[int]:
        return m.resident.encode_chat([{"role": "user", "content": text}])

    prompts = [encode(p["text"]) for p in texts["prompts"]]
    calib = [encode(t) for t in texts["calibration"][: spec.calibration_prompts]]
    cal = calibrate_models(pair, spec, m, calib, report)
    target_bytes = m.resident.target.nbytes()
    budgets = {b: budget_bytes(cal.timing, b) for b in BUDGETS}
    load_streamed(pair, m, budgets, stream or StreamConfig())

    def run(cfg: Config, i: int):
        if cfg.engine == "mlx-lm":
            return run_mlx_lm(m.mlx_target, m.mlx_tokenizer, m.mlx_draft, prompts[i], cfg,
                              spec.max_tokens, i, target_bytes)
        session = m.sessions[(cfg.budget, "bad" if cfg.draft == "bad" else "good")]
        return run_canopy(session, prompts[i], cfg, spec.max_tokens, i)

    try:
        sweep, best_k = sweep_mlx_lm(spec, run, report)
        configs = build_configs(spec, best_k)
        results, probes, measure_seconds = measure_configs(spec, configs, run, cal.probe, report)
    finally:
        m.close()
        cal.probe.close()
    run_probe = median_probe(probes)
    adjusted = {
        k: replace(c, timing=anchored(c.timing, run_probe, cal.probe_budget, reference=c.probe))
        for k, c in cal.cals.items()
    }
    rows = prediction_rows(spec, configs, results, cal, adjusted, budgets, target_bytes,
                           run_probe)
    env["load_average_end"] = env_load()
    return {
        "environment": env,
        "pair": {k: str(v) for k, v in asdict(pair).items()},
        "spec": asdict(spec),
        "stream": asdict(stream or StreamConfig()),
        "budgets_bytes": budgets,
        "target_bytes": target_bytes,
        "prompt_categories": [p["category"] for p in texts["prompts"]],
        "calibration": {f"{s} / {d} draft": c.to_dict() for (s, d), c in cal.cals.items()},
        "drift": {
            "probes": len(probes),
            "median_probe": run_probe.__dict__,
            "bandwidth": adjusted[("greedy", "good")].timing.read_bandwidth,
            "all_probes": [p.__dict__ for p in probes],
        },
        "mlx_lm_pass_ratio": cal.mlx_ratio,
        "calibration_seconds": cal.seconds,
        "measure_seconds": measure_seconds,
        "mlx_lm_sweep": sweep,
        "mlx_lm_best_k": best_k,
        "rows": rows,
        "bad_draft_check": bad_draft_check(results, configs),
        "mape_percent": cm.mape(
            [(r["predicted_tokens_per_second"], r["tokens_per_second"]) for r in rows]
        ),
    }


def bad_draft_check(results: dict[str, Aggregate], configs: list[Config]) -> list[dict]:
    """Tree auto with the bad draft vs ar, same budget, same prompts (goal >= 0.95)."""
    out = []
    for cfg in configs:
        if cfg.draft != "bad":
            continue
        ar = results[Config("canopy", "ar", cfg.budget, cfg.sampling, draft="none").key]
        bad = results[cfg.key]
        done = {s.prompt for s in bad.samples}
        same = Aggregate(ar.config, [s for s in ar.samples if s.prompt in done])
        ratio = bad.tokens_per_second / same.tokens_per_second if same.samples else None
        out.append(
            {
                "budget": cfg.budget,
                "tree_auto_tokens_per_second": bad.tokens_per_second,
                "ar_tokens_per_second": same.tokens_per_second,
                "ratio": ratio,
                "auto_ar_fraction": bad.summary()["auto_ar_fraction"],
            }
        )
    return out
