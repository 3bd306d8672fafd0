"""`canopy bench --pair coder`: the real small-draft / big-target pair (Qwen2.5-Coder 1.5B
target, 0.5B draft), resident, streamed at 50 % and 25 % of the target's bytes, and inside a
memory cgroup whose limit is below the target's size.

Order: load the resident pair; calibrate the cost model (timing in situ, acceptance from ar,
chain and fixed-tree runs on calibration prompts) and sweep mlx-lm's num_draft_tokens on a
calibration prompt in mlx-lm's own process; plan the prompt rounds that fit the time budget
(engine.bench.coder_plan); resident rounds (mlx-lm in its own process while this one holds only
the draft, then Canopy's rows on the same prompt with the target reloaded); each streamed budget
in turn (the process then holds the draft and the streamed target only, so its peak RSS is what
a streamed run needs); the cgroup rows in child processes. Greedy only; every row's ids are
compared with resident `ar`.
"""

from __future__ import annotations

import gc
import json
import time
from dataclasses import asdict
from pathlib import Path

from ..config import SamplingConfig, StreamConfig, TreeConfig
from ..costmodel import formulas as cm
from ..costmodel.acceptance import acceptance_from
from ..costmodel.calibrate import calibrate
from ..costmodel.measure import measure_timing
from ..streaming.memory import reset_peak_rss
from .cgroup import CgroupUnavailable, memory_cgroup
from .child import job, run_child
from .coder_plan import (
    STREAMED,
    Clock,
    CoderSpec,
    canopy_configs,
    plan_rounds,
    resident_configs,
    runs_in_round,
    tokens_for,
)
from .environment import env_load, environment
from .pair import Pair, Report
from .run import budget_bytes, predict
from .runs import Aggregate, Config, run_canopy

PROMPTS_FILE = Path(__file__).resolve().parents[2] / "resources" / "coder_bench_prompts.json"
GREEDY = ("greedy", "good")


def load_prompts() -> dict:
    """The coder prompt set: {"prompts": [{"category", "text"}], "calibration": [text]}."""
    return json.loads(PROMPTS_FILE.read_text())


class CoderRun:
    """One run's state: models, calibration, samples by configuration, the clock."""

    def __init__(self, pair: Pair, spec: CoderSpec, stream: StreamConfig, tmp: Path,
                 report: Report):
        from ..formats.loader import load_model

        self.pair, self.spec, self.stream, self.tmp, self.say = pair, spec, stream, tmp, report
        self.clock = Clock(spec.minutes * 60)
        report(f"loading {pair.target} and {pair.draft}")
        self.draft = load_model(pair.draft)
        self.load_resident()
        texts = load_prompts()
        chat = [{"role": "user", "content": ""}]
        self.prompts = [self.resident.encode_chat([dict(chat[0], content=p["text"])])
                        for p in texts["prompts"]]
        self.calib = [self.resident.encode_chat([dict(chat[0], content=t)])
                      for t in texts["calibration"][: spec.calibration_prompts]]
        self.categories = [p["category"] for p in texts["prompts"]]
        self.target_bytes = self.resident.target.nbytes()
        self.draft_bytes = self.draft.nbytes()
        self.results: dict[str, Aggregate] = {}
        self.failures: list[dict] = []
        self.partial: Path | None = None  # where save_partial writes
        self.steps: dict[str, list] = {"tree": [], "chain": []}  # resident events: acceptance

    # ---- calibration ------------------------------------------------------------------------
    def calibrate(self) -> None:
        spec, t0 = self.spec, time.perf_counter()
        self.say("calibrating the cost model: timing (in situ streamed passes included)")
        timing = measure_timing(self.pair.target, self.draft.model, in_situ=True)
        self.say("calibrating the cost model: acceptance and overheads (ar, chain, "
                 f"{spec.tree_nodes}-node trees)")
        tree = TreeConfig(max_nodes=spec.tree_nodes, max_depth=max(12, spec.tree_nodes // 4),
                          threshold=1e-9, adaptive=False)
        self.cal = calibrate(self.resident, self.calib, timing, SamplingConfig(),
                             spec.calibration_tokens, tree=tree, k=spec.chain_k)
        self.drop_resident()  # mlx-lm's own copy of the pair next: never both at once
        self.say(f"mlx-lm in its own process: target alone and num_draft_tokens "
                 f"{spec.sweep_ks} on a calibration prompt")
        cfgs = [Config("mlx-lm", "ar", "resident", "greedy", draft="none")] + [
            Config("mlx-lm", "chain", "resident", "greedy", k=k) for k in spec.sweep_ks]
        child = self._child("mlx-lm", [(1000, self.calib[0], c) for c in cfgs], "sweep",
                            spec.sweep_tokens)
        ar, *spec_runs = child.samples
        self.mlx_pass = ar.seconds / max(1, ar.tokens - 1)  # its own 1-token pass, seconds
        self.sweep = {f"k={c.k}": s.rate for c, s in zip(cfgs[1:], spec_runs)}
        self.best_k = max(spec.sweep_ks, key=lambda k: self.sweep[f"k={k}"])
        self.say("mlx-lm sweep: " + ", ".join(f"{k}: {v:.2f} tok/s" for k, v in
                                              self.sweep.items()) + f"; best k={self.best_k}")
        self.budgets = {b: budget_bytes(self.cal.timing, b) for b in ("resident", *STREAMED)}
        self.calibration_seconds = time.perf_counter() - t0

    # ---- predictions and the plan -----------------------------------------------------------
    def predicted(self, cfg: Config, budget: str | None = None) -> cm.Prediction:
        b = self.budgets[budget or cfg.budget]
        return predict(cfg, {GREEDY: self.cal}, b, tokens_for(self.spec, cfg),
                       self.mlx_pass if cfg.engine == "mlx-lm" else None)

    def run_seconds(self, cfg: Config, budget: str | None = None) -> float:
        rate = self.predicted(cfg, budget).tokens_per_second
        return tokens_for(self.spec, cfg) / max(1e-6, rate)

    def load_seconds(self, nbytes: int) -> float:
        return nbytes / self.cal.timing.cold_read_bandwidth

    def plan(self) -> None:
        spec, n = self.spec, min(self.spec.max_rounds, len(self.prompts))
        res = resident_configs(spec, self.best_k)
        child_load = self.load_seconds(2 * self.target_bytes + self.draft_bytes)  # + reload
        costs = {"resident": [child_load + sum(self.run_seconds(c) for c in res)] * n}
        for b in STREAMED:
            cfgs = canopy_configs(spec, b)
            costs[b] = [sum(self.run_seconds(c) for c in runs_in_round(spec, cfgs, i))
                        for i in range(n)]
            costs[b][0] += self.load_seconds(self.budgets[b])
        tree = Config("canopy", "tree", "25%", "greedy", pipeline=True)
        self.cgroup_seconds = (self.load_seconds(2 * self.target_bytes + self.draft_bytes)
                               + self.run_seconds(tree))
        self.round_costs = costs
        self.rounds = plan_rounds(costs, self.clock.left(), self.cgroup_seconds, n)
        total = self.cgroup_seconds + sum(sum(c[: self.rounds[p]]) for p, c in costs.items())
        self.say(f"plan: {self.rounds} prompt rounds per phase (streamed ar on "
                 f"{min(spec.streamed_ar_prompts, self.rounds['50%'])}); predicted "
                 f"{total / 60:.0f} min for the rest, {self.clock.left() / 60:.0f} min left")

    def reserve_after(self, phase: str) -> float:
        """Predicted seconds of the phases after `phase`, as planned."""
        order = ["resident", *STREAMED]
        later = order[order.index(phase) + 1:]
        return self.cgroup_seconds + sum(sum(self.round_costs[p][: self.rounds[p]])
                                         for p in later)

    # ---- measuring --------------------------------------------------------------------------
    def measure(self, cfg: Config, session, i: int, steps: list | None = None) -> None:
        """Canopy's run of `cfg` on prompt i; a failure is recorded and the run goes on."""
        try:
            sample = run_canopy(session, self.prompts[i], cfg, tokens_for(self.spec, cfg), i,
                                steps)
        except Exception as e:  # one failed row must not lose an hour of the others
            self.failures.append({"config": cfg.key, "error": f"{type(e).__name__}: {e}"})
            self.say(f"FAILED {cfg.key}: {type(e).__name__}: {e}")
            return
        self.add(cfg, sample)

    def save_partial(self) -> None:
        """Every sample so far, after each round: a run that dies still leaves its figures."""
        if self.partial is not None:
            rows = {k: [asdict(s) for s in a.samples] for k, a in self.results.items()}
            self.partial.write_text(json.dumps({"samples": rows, "failures": self.failures}))

    def add(self, cfg: Config, sample) -> None:
        self.results.setdefault(cfg.key, Aggregate(cfg, [])).samples.append(sample)
        self.say(f"[{self.clock.elapsed() / 60:.1f} min] prompt {sample.prompt + 1}: {cfg.key}: "
                 f"{sample.rate:.3f} tok/s, {sample.tokens} tokens, "
                 f"{sample.tokens / max(1, sample.passes):.2f} tokens/pass")

    def _child(self, engine: str, runs: list, name: str, max_tokens: int, **kw):
        import mlx.core as mx

        mx.clear_cache()  # MLX's freed buffers back to the OS before a big child starts
        draft = self.pair.draft
        child = run_child(job(engine, self.pair.target, draft, runs, max_tokens,
                              self.target_bytes, **kw), self.tmp, name, **self._cg)
        if child.returncode != 0 and not self._cg:
            raise RuntimeError(f"{engine} in its own process {child.status}: "
                               f"{child.stderr_tail}")
        return child

    _cg: dict = {}

    def rounds_of(self, phase: str, run_round) -> int:
        """The planned rounds of `phase`, cut short when behind time, and more rounds (up to one
        per prompt) while the run is ahead of its plan: later phases keep their planned time."""
        costs, planned, done = self.round_costs[phase], self.rounds[phase], 0
        for i in range(len(costs)):
            if i and not self.clock.affords(costs[i], self.reserve_after(phase)):
                self.say(f"{phase}: {i} rounds ({'cut short: ' if i < planned else ''}time "
                         "budget)")
                break
            t0 = time.perf_counter()
            run_round(i)
            self.clock.observe(costs[i], time.perf_counter() - t0)
            self.save_partial()
            done += 1
            rest = sum(costs[i + 1: planned])
            eta = (rest + self.reserve_after(phase)) * self.clock.scale
            self.say(f"{phase}: round {i + 1} ({planned} planned) done after "
                     f"{self.clock.elapsed() / 60:.1f} min; measured/predicted seconds so far "
                     f"{self.clock.scale:.2f}; about {eta / 60:.0f} min to go as planned, "
                     f"{self.clock.left() / 60:.0f} min left in the budget")
        return done

    def resident_phase(self) -> None:
        cfgs = resident_configs(self.spec, self.best_k)
        mlx, mine = cfgs[:2], cfgs[2:]

        def run_round(i: int) -> None:
            try:
                child = self._child("mlx-lm", [(i, self.prompts[i], c) for c in mlx],
                                    f"mlx-{i}", self.spec.max_tokens)
                for c, s in zip(mlx, child.samples):
                    self.add(c, s)
            except RuntimeError as e:
                self.failures.append({"config": f"mlx-lm, prompt {i}", "error": str(e)})
                self.say(f"FAILED mlx-lm on prompt {i + 1}: {e}")
            self.load_resident()  # dropped while mlx-lm ran; reloaded for Canopy's rows
            for c in mine:
                reset_peak_rss()
                keep = self.steps["tree"] if c.nodes else self.steps.get(c.mode) \
                    if c.mode == "chain" else None
                self.measure(c, self.resident, i, keep)
            self.drop_resident()

        self.done = {"resident": self.rounds_of("resident", run_round)}
        ar = self.results.get(Config("canopy", "ar", "resident", "greedy", draft="none").key)
        self.ar_ids = {s.prompt: s.ids for s in ar.samples} if ar else {}

    def load_resident(self) -> None:
        from ..formats.loader import load_model
        from ..session import Session

        self.resident = Session(load_model(self.pair.target), self.draft)

    def drop_resident(self) -> None:
        """Drop the resident target (the draft stays): mlx-lm's process then holds its own copy
        of the pair without ours (18 GB together), and streamed phases' RSS is their own."""
        import mlx.core as mx

        self.resident = None
        gc.collect()
        mx.clear_cache()

    def streamed_phase(self, budget: str) -> None:
        from ..session import Session
        from ..streaming.streamed_model import load_streamed_model

        s = self.stream
        target = load_streamed_model(self.pair.target, self.budgets[budget], prefetch=s.prefetch,
                                     bypass_cache=s.bypass_cache, read_timeout=s.read_timeout)
        session = Session(target, self.draft)
        cfgs = canopy_configs(self.spec, budget)

        def run_round(i: int) -> None:
            for c in runs_in_round(self.spec, cfgs, i):
                reset_peak_rss()
                self.measure(c, session, i)

        try:
            self.done[budget] = self.rounds_of(budget, run_round)
        finally:
            session.close()  # its layers go with this frame; the next budget loads its own

    def cgroup_rows(self) -> list[dict]:
        """mlx-lm's target alone, resident, then Canopy tree (auto) streamed at 25 %, each in a
        fresh memory cgroup limited below the target's size, on the first prompt."""
        limit, ids = self.spec.cgroup_limit_bytes, self.prompts[0]
        runs = {
            "mlx-lm": ("mlx-lm", Config("mlx-lm", "ar", "resident", "greedy", draft="none"), {}),
            "canopy": ("canopy", Config("canopy", "tree", "25%", "greedy", pipeline=True),
                       {"budget_bytes": self.budgets["25%"], "stream": asdict(self.stream)}),
        }
        rows = []
        for name, (engine, cfg, kw) in runs.items():
            row = {"label": cfg.label, "engine": engine, "mode": cfg.mode, "budget": cfg.budget,
                   "cgroup_limit_bytes": limit, "prompts": 1}
            try:
                with memory_cgroup(limit) as group:
                    self._cg = {"preexec_fn": group["preexec_fn"]}
                    child = self._child(engine, [(0, ids, cfg)], f"cgroup-{name}",
                                        self.spec.max_tokens, **kw)
                    row["cgroup_peak_bytes"] = group["peak"]()
            except CgroupUnavailable as e:
                row["status"] = f"skipped: memory cgroups are not writable here ({e})"
                rows.append(row)
                continue
            finally:
                self._cg = {}
            row["status"] = child.status
            row["seconds"] = child.seconds
            if child.samples:
                row.update(Aggregate(cfg, child.samples).summary())
                row["ids_equal_ar"] = child.samples[0].ids == self.ar_ids.get(0)
            self.say(f"cgroup {limit / 1e9:.2f} GB: {cfg.label} ({cfg.budget}): {row['status']}")
            rows.append(row)
        return rows

    def measured_acceptance(self) -> cm.Acceptance | None:
        """E(N) and chain alpha from the resident fixed-tree and chain rows (all prompts)."""
        if not self.steps["tree"]:
            return None
        width = TreeConfig().expand_width
        return acceptance_from(self.steps["tree"], self.steps["chain"], self.spec.tree_nodes,
                               self.spec.chain_k, width)


def run_coder_bench(pair: Pair, spec: CoderSpec, stream: StreamConfig | None, tmp: Path,
                    report: Report = lambda text: None, partial: Path | None = None) -> dict:
    """The whole run (module docstring); returns the JSON-ready result (engine.bench
    .coder_report writes it)."""
    from .coder_rows import coder_result

    env = environment()
    run = CoderRun(pair, spec, stream or StreamConfig(), tmp, report)
    run.partial = partial
    run.calibrate()
    run.plan()
    run.resident_phase()
    for b in STREAMED:
        report(f"streamed at {b} of the target ({run.budgets[b] / 2**20:.0f} MiB)")
        run.streamed_phase(b)
        gc.collect()
    cgroup = run.cgroup_rows()
    env["load_average_end"] = env_load()
    return coder_result(run, env, cgroup)
