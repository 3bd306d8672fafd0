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
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..config import SamplingConfig, TreeConfig
from ..costmodel import formulas as cm
from ..costmodel.calibrate import calibrate
from ..costmodel.drift import DriftProbe, anchored, median_probe
from ..costmodel.measure import measure_timing
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
        p = prompts or 20
        return cls(p, max(1, p // 2), max(1, p // 2), max_tokens or 24, (1, 2, 3, 4), 3, 4, 3, 24)


@dataclass
class Pair:
    target: Path
    draft: Path
    bad_draft: Path
    description: str


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def environment() -> dict:
    import os
    import platform

    import mlx.core as mx

    preload = os.environ.get("LD_PRELOAD", "")
    if sys.platform == "darwin":
        blas = "Apple Accelerate / Metal (MLX on macOS)"
    elif "openblas" in preload.lower():
        lib = next(p for p in preload.split(":") if "openblas" in p.lower())
        blas = f"OpenBLAS ({lib}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')})"
    else:
        blas = "MLX CPU wheel's reference BLAS (no OpenBLAS preloaded)"
    try:
        from importlib.metadata import version

        mlx_lm_version = version("mlx-lm")
    except Exception:
        mlx_lm_version = "?"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "mlx": mx.__version__,
        "mlx_lm": mlx_lm_version,
        "blas": blas,
        "device": str(mx.default_device()),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def prepare_pair(args, spec: BenchSpec, tmp: Path) -> Pair:
    """Tiny models (--quick), the given folders, or the demo pair; plus a bad draft."""
    from ..testing import make_tiny_model

    if spec.quick:
        dims = {"num_layers": 6, "hidden_size": 128, "intermediate_size": 512}
        target = make_tiny_model(tmp / "target", seed=1, **dims)
        draft = make_tiny_model(tmp / "draft", like=target, noise=0.1, seed=3)
        bad = make_tiny_model(tmp / "bad-draft", seed=7, **dims)
        return Pair(
            target,
            draft,
            bad,
            "tiny random models (engine.testing): target, target + "
            "noise 0.1 as draft, an unrelated model as bad draft",
        )
    if args.target:
        target, draft = Path(args.target), Path(args.draft) if args.draft else None
        if draft is None:
            from ..errors import CanopyError

            raise CanopyError("canopy bench needs --draft with --target.")
        what = f"{target.name} target, {draft.name} draft"
    else:
        from ..formats.demo import build_demo_pair

        target, draft = build_demo_pair(progress=lambda e: say(f"{e.what}: {e.done}/{e.total}"))
        what = "demo pair: SmolLM2-135M-Instruct target, its 4-bit requantization as draft"
    say("building a bad draft (2-bit requantization of the target)")
    bad = make_bad_draft(target, tmp / "bad-draft")
    return Pair(target, draft, bad, what + "; bad draft: the target requantized to 2 bits")


def make_bad_draft(target: Path, out: Path) -> Path:
    try:
        from ..formats.demo import make_draft

        return make_draft(target, out, bits=2, group_size=32)
    except ImportError:  # no demo module: an unrelated random model with the same shapes
        import shutil

        from ..testing import random_weights, save_weights

        config = json.loads((target / "config.json").read_text())
        out.mkdir(parents=True, exist_ok=True)
        for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
            if (target / f).exists():
                shutil.copy2(target / f, out / f)
        save_weights(out, random_weights(config, seed=7))
        return out


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
    if cfg.mode == "tree":  # the run's own tree settings: the policy that runs is simulated
        tree = TreeConfig()
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


def run_bench(pair: Pair, spec: BenchSpec) -> dict:
    import mlx_lm

    from ..formats.loader import load_model
    from ..session import Session
    from ..streaming.streamed_model import load_streamed_model

    env = environment()
    texts = json.loads(PROMPTS_FILE.read_text())
    say(f"loading {pair.target} and {pair.draft} (Canopy and mlx-lm)")
    draft, bad = load_model(pair.draft), load_model(pair.bad_draft)
    resident = Session(load_model(pair.target), draft)
    mlx_target, mlx_tok = mlx_lm.load(str(pair.target))
    mlx_draft, _ = mlx_lm.load(str(pair.draft))

    def encode(text: str) -> list[int]:
        return resident.encode_chat([{"role": "user", "content": text}])

    prompts = [encode(p["text"]) for p in texts["prompts"]]
    categories = [p["category"] for p in texts["prompts"]]
    calib = [encode(t) for t in texts["calibration"][: spec.calibration_prompts]]

    t0 = time.perf_counter()
    say("calibrating the cost model: timing")
    timing = measure_timing(pair.target, draft.model, in_situ=False)
    probe_budget = timing.base_bytes + (timing.prefetch + 1) * max(timing.layer_bytes)
    probe = DriftProbe(resident.target.model, draft.model, pair.target, probe_budget)
    timing = anchored(timing, probe.measure(), probe_budget)
    cals = {}
    for sampling, temp in (("greedy", 0.0), ("t=0.7", 0.7)):
        say(f"calibrating the cost model: acceptance and overheads, {sampling}")
        cals[(sampling, "good")] = calibrate(
            resident, calib, timing, SamplingConfig(temp), spec.calibration_tokens, probe=probe
        )
    bad_session = Session(resident.target, bad)
    say("calibrating the cost model: the bad draft")
    cals[("greedy", "bad")] = calibrate(
        bad_session, calib, timing, SamplingConfig(), spec.calibration_tokens, probe=probe
    )
    # mlx-lm runs its own forward (async evaluation, no tree positions): its level relative to
    # Canopy's 1-token pass, measured on a calibration prompt next to a probe
    target_bytes = resident.target.nbytes()
    mlx_cfg = Config("mlx-lm", "ar", "resident", "greedy", draft="none")
    ratios = []
    for ids in calib:
        sample = run_mlx_lm(
            mlx_target, mlx_tok, None, ids, mlx_cfg, spec.calibration_tokens, 0, target_bytes
        )
        ratios.append(sample.seconds / max(1, sample.tokens - 1) / probe.measure().target)
    mlx_ratio = float(sorted(ratios)[len(ratios) // 2])
    calibration_seconds = time.perf_counter() - t0

    budgets = {b: budget_bytes(timing, b) for b in BUDGETS}
    streamed = {b: load_streamed_model(pair.target, budgets[b]) for b in BUDGETS if budgets[b]}
    sessions = {("resident", "good"): resident, ("resident", "bad"): bad_session}
    for b, target in streamed.items():
        sessions[(b, "good")], sessions[(b, "bad")] = Session(target, draft), Session(target, bad)

    def run(cfg: Config, i: int):
        if cfg.engine == "mlx-lm":
            return run_mlx_lm(
                mlx_target, mlx_tok, mlx_draft, prompts[i], cfg, spec.max_tokens, i, target_bytes
            )
        session = sessions[(cfg.budget, "bad" if cfg.draft == "bad" else "good")]
        return run_canopy(session, prompts[i], cfg, spec.max_tokens, i)

    sweep, best_k = {}, {}
    for sampling in ("greedy", "t=0.7"):
        for k in spec.sweep_ks:
            cfg = Config("mlx-lm", "chain", "resident", sampling, k=k)
            agg = Aggregate(cfg, [run(cfg, i) for i in range(spec.sweep_prompts)])
            sweep[f"{sampling} k={k}"] = agg.tokens_per_second
            say(f"mlx-lm sweep {sampling} k={k}: {agg.tokens_per_second:.2f} tok/s")
        best_k[sampling] = max(spec.sweep_ks, key=lambda k: sweep[f"{sampling} k={k}"])

    configs = build_configs(spec, best_k)
    results = {c.key: Aggregate(c, []) for c in configs}
    t1 = time.perf_counter()
    probes = []
    for i in range(spec.prompts):
        probes.append(probe.measure())
        for cfg in configs:
            if i < prompt_count(spec, cfg):
                sample = run(cfg, i)
                results[cfg.key].samples.append(sample)
                say(
                    f"[{i + 1}/{spec.prompts}] {cfg.key}: {sample.rate:.2f} tok/s, "
                    f"{sample.tokens} tokens"
                )
    measure_seconds = time.perf_counter() - t1
    probes.append(probe.measure())
    for target in [*streamed.values(), probe]:
        target.close()
    run_probe = median_probe(probes)
    adjusted = {
        k: replace(c, timing=anchored(c.timing, run_probe, probe_budget, reference=c.probe))
        for k, c in cals.items()
    }
    drift = {
        "probes": len(probes),
        "median_probe": run_probe.__dict__,
        "bandwidth": adjusted[("greedy", "good")].timing.read_bandwidth,
        "all_probes": [p.__dict__ for p in probes],
    }

    rows = []
    for cfg in configs:
        row = results[cfg.key].summary()
        pred = predict(
            cfg, adjusted, budgets[cfg.budget], spec.max_tokens, mlx_ratio * run_probe.target
        )
        row["predicted_at_calibration"] = predict(
            cfg, cals, budgets[cfg.budget], spec.max_tokens
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
    env["load_average_end"] = env_load()
    return {
        "environment": env,
        "pair": {k: str(v) for k, v in asdict(pair).items()},
        "spec": asdict(spec),
        "budgets_bytes": budgets,
        "target_bytes": target_bytes,
        "prompt_categories": categories,
        "calibration": {f"{s} / {d} draft": c.to_dict() for (s, d), c in cals.items()},
        "drift": drift,
        "mlx_lm_pass_ratio": mlx_ratio,
        "calibration_seconds": calibration_seconds,
        "measure_seconds": measure_seconds,
        "mlx_lm_sweep": sweep,
        "mlx_lm_best_k": best_k,
        "rows": rows,
        "bad_draft_check": bad_draft_check(results, configs),
        "mape_percent": cm.mape(
            [(r["predicted_tokens_per_second"], r["tokens_per_second"]) for r in rows]
        ),
    }


def env_load():
    import os

    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


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


def run_bench_cli(args) -> int:
    """Entry point of `canopy bench` (app/cli.py)."""
    from .report import write_outputs

    if getattr(args, "devices", False):
        from ..costmodel.devices import device_table_markdown

        print(device_table_markdown())
        return 0
    spec = (
        BenchSpec.quick_run()
        if args.quick
        else BenchSpec.full_run(getattr(args, "prompts", None), getattr(args, "max_tokens", None))
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="canopy-bench-") as tmp:
        pair = prepare_pair(args, spec, Path(tmp))
        result = run_bench(pair, spec)
    result["total_seconds"] = time.perf_counter() - start
    paths = write_outputs(result, out)
    print(paths["markdown"].read_text())
    say(f"wrote {', '.join(str(p) for p in paths.values())} in {result['total_seconds']:.0f} s")
    return 0
