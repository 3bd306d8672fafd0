"""Drift probes: a second or two of re-measurement between benchmark runs, so the cost model
predicts with the machine's speed at the time of the run (a shared machine drifts by tens of
percent in minutes), not only at calibration time."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..config import SamplingConfig
from ..decoding.draft_model import DraftModel
from ..models.cache import make_cache
from . import formulas as cm
from .measure import chain_tree, draft_forward, effective_bandwidth, median_seconds


@dataclass(frozen=True)
class Probe:
    """A quick re-measurement (a second or two) of what drifts on a shared machine."""

    draft: float  # one draft forward over 1 node (+ top-k)
    target: float  # one resident 1-token target pass
    streamed: float  # one 1-token pass of the target streamed at `DriftProbe.budget`


class DriftProbe:
    """Re-measures draft, target and storage speed between benchmark prompts, so that the cost
    model predicts with the machine's speed during the run, not only at calibration time."""

    def __init__(self, target_model, draft_model, target_dir: str | Path, budget: int):
        from ..streaming.streamed_model import load_streamed_model

        self.budget = budget
        self.target = target_model
        self.draft = DraftModel(draft_model, SamplingConfig())
        self.draft.prefill([(7 * i) % 200 + 10 for i in range(65)])
        self.draft.start(11)
        self.tree = chain_tree(1)
        self.cache = make_cache(len(target_model.layers))
        mx.eval(target_model(mx.array([[(5 * i) % 200 + 10 for i in range(64)]]), cache=self.cache))
        self.streamed = load_streamed_model(target_dir, budget)
        self.streamed_cache = make_cache(len(self.streamed.model.layers))
        mx.eval(self.streamed.model(mx.array([[10, 11, 12, 13]]), cache=self.streamed_cache))

    def _pass(self, model, cache) -> None:
        mx.eval(model(mx.array([[42]]), cache=cache))
        for c in cache:
            c.trim(1)

    def measure(self, reps: int = 3) -> Probe:
        d = median_seconds(partial(draft_forward, self.draft, self.tree, 1, 64, 4), reps)
        t = median_seconds(partial(self._pass, self.target, self.cache), reps)
        s = median_seconds(partial(self._pass, self.streamed.model, self.streamed_cache), reps)
        return Probe(d, t, s)

    def close(self) -> None:
        self.streamed.close()


def median_probe(probes: list[Probe]) -> Probe:
    return Probe(
        *(
            float(np.median([getattr(p, f) for p in probes]))
            for f in ("draft", "target", "streamed")
        )
    )


def anchored(
    timing: cm.Timing, probe: Probe, budget: int, reference: Probe | None = None
) -> cm.Timing:
    """The measured curves keep their shape; their level follows `probe`, measured at the time
    the prediction is for: d(1) = the probe's draft forward, L c(1) + h(1) = its resident pass,
    and B is refitted with (4) to its streamed pass. A shared machine's speed drifts by tens of
    percent in minutes; a one-off calibration alone would carry that drift into every error.
    With a `reference` probe (taken when `timing` was fitted), levels scale by probe / reference
    instead."""
    if reference is not None:
        ft, fd = probe.target / reference.target, probe.draft / reference.draft
    else:
        ft = probe.target / (timing.num_layers * timing.layer_compute(1) + timing.head_compute(1))
        fd = probe.draft / timing.draft_forward(1)
    scaled = replace(
        timing,
        draft_forward=timing.draft_forward.scaled(fd),
        layer_compute=timing.layer_compute.scaled(ft),
        head_compute=timing.head_compute.scaled(ft),
    )
    return replace(scaled, read_bandwidth=effective_bandwidth(scaled, budget, probe.streamed))
