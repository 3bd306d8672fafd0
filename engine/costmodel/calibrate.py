"""Calibrating the cost model on the actual machine and pair (engine.costmodel.formulas).

Acceptance and per-step overheads come from short generations on calibration prompts (`ar`,
`chain` and big fixed `tree`s, engine.costmodel.acceptance); the levels of the timing curves
(engine.costmodel.measure) are then fitted to those runs in situ. Drift: engine.costmodel.drift.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from ..config import GenerationConfig, LookupConfig, SamplingConfig, TreeConfig
from . import formulas as cm
from .acceptance import StepRecord, acceptance_from, run_steps
from .drift import DriftProbe, Probe, median_probe

# full batches (no threshold): R(N) expansions exactly, and E(N) for every N up to 48
CALIBRATION_TREE = TreeConfig(max_nodes=48, max_depth=12, threshold=1e-9, adaptive=False)
CHAIN_K = 4  # the benchmark's chain length: per-forward errors then cancel in o_step


def formula_draft(timing: cm.Timing, acc: cm.Acceptance, rec: StepRecord, width: int) -> float:
    """Draft seconds the formulas give for one recorded step (chain scale excluded)."""
    if rec.nodes == 1:
        return 0.0
    if rec.mode == "chain":
        return cm.chain_draft_seconds(timing.draft_forward, rec.nodes - 1, acc.start_tokens_chain)
    return cm.tree_draft_seconds(timing.draft_forward, rec.nodes, width, acc.start_tokens_tree)


def fit_in_situ(
    timing: cm.Timing, acc: cm.Acceptance, records: dict[str, list[StepRecord]], width: int
) -> cm.Timing:
    """Levels and overheads from the calibration runs themselves (resident target): compute
    curves scaled so the pass formula matches the measured verify seconds, the draft curve so
    the tree formula (3) matches the measured tree draft seconds (chain: its own scale), and
    o_step per mode = median(step - draft - verify)."""

    def ratio(measured, predicted):
        m, p = sum(measured), sum(predicted)
        return m / p if p > 0 and m > 0 else 1.0

    steps = [r for rs in records.values() for r in rs]
    fv = ratio(
        [r.tree.verify_seconds for r in steps],
        [cm.pass_seconds(timing, r.nodes, None, 0.0).seconds for r in steps],
    )
    drafts = {
        m: ratio(
            [r.tree.draft_seconds for r in records[m]],
            [formula_draft(timing, acc, r, width) for r in records[m]],
        )
        for m in ("chain", "tree")
    }
    o = {
        m: float(np.median([r.seconds - r.tree.draft_seconds - r.tree.verify_seconds for r in rs]))
        for m, rs in records.items()
        if rs
    }
    return replace(
        timing,
        layer_compute=timing.layer_compute.scaled(fv),
        head_compute=timing.head_compute.scaled(fv),
        draft_forward=timing.draft_forward.scaled(drafts["tree"]),
        chain_draft_scale=drafts["chain"] / drafts["tree"],
        step_overhead=o.get("ar", 0.0),
        chain_overhead=o.get("chain"),
        tree_overhead=o.get("tree"),
        node_overhead=0.0,
    )


@dataclass(frozen=True)
class Calibration:
    """Timing (with overheads) and acceptance for one sampling setting."""

    timing: cm.Timing
    acceptance: cm.Acceptance
    seconds: float  # how long calibrating took
    probe: Probe | None = None  # median drift probe during the calibration runs

    def to_dict(self) -> dict:
        return {
            "timing": self.timing.to_dict(),
            "acceptance": self.acceptance.to_dict(),
            "seconds": self.seconds,
            "probe": self.probe and self.probe.__dict__,
        }


def calibrate(
    session,
    prompts: list[list[int]],
    timing: cm.Timing,
    sampling: SamplingConfig,
    max_tokens: int = 24,
    tree: TreeConfig = CALIBRATION_TREE,
    k: int = CHAIN_K,
    probe: DriftProbe | None = None,
) -> Calibration:
    """Acceptance and overheads from ar, chain(k) and fixed-tree runs on a resident `session`.

    The levels of the timing curves and the overheads are fitted to the runs themselves
    (`fit_in_situ`); with a `probe`, probes taken between the runs record the machine's speed
    at that time (`Calibration.probe`), the reference for later drift (`anchored`).
    """
    t0 = time.perf_counter()
    probes = []
    records: dict[str, list[StepRecord]] = {"ar": [], "chain": [], "tree": []}
    warm: dict[str, list[StepRecord]] = {"ar": [], "chain": [], "tree": []}  # first steps dropped
    for i, ids in enumerate(prompts):
        s = replace(sampling, seed=1000 + i)
        if probe is not None:
            probes.append(probe.measure())
        for mode in records:
            cfg = GenerationConfig(
                mode=mode,
                max_tokens=max_tokens,
                sampling=s,
                tree=tree,
                chain_length=k,
                pipeline=False,
                lookup=LookupConfig(sources=()),  # the draft model's own trees
            )
            steps = run_steps(session, ids, cfg)
            records[mode] += steps
            warm[mode] += steps[1:]
    trees, chains = [r.tree for r in records["tree"]], [r.tree for r in records["chain"]]
    acc = acceptance_from(trees, chains, tree.max_nodes, k, tree.expand_width)
    timing = fit_in_situ(timing, acc, warm, tree.expand_width)
    probed = median_probe(probes) if probes else None
    return Calibration(timing, acc, time.perf_counter() - t0, probed)
