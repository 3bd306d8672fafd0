"""The Apple Silicon device model, fitted to published measurements and checked chip by chip.

Data: resources/apple_silicon_measurements.csv (every row read in a cited source) and
resources/apple_silicon_chips.csv (Apple's bandwidth, GPU cores, TFLOPS). The model:

    decode step (one token):  t1 = bytes / (eta_mem[tier] * BW) + layers * launch            (8)
    prompt, per token:        t_pp = 2 * params / (eta_gpu[gen] * peak)                      (9)
    verify n tokens:          v(n) = t1 * (1 + beta * (n - 1))                               (10)
    draft-model speculation:  tok/s = E / (k * t1_draft + v(k + 1)),  E = 1 / (1 - share)    (11)

tier: base/Pro, Max or Ultra (the wider the memory system, the smaller the share the GPU reaches);
peak: GPU cores * per-core fp32 rate (Apple's TFLOPS for M1 and M2; Apple publishes none for M3
and M4, so their rate is M2's and eta_gpu of that generation absorbs the difference); share: the
published fraction of generated tokens that came from the draft (E = tokens per target pass);
k: drafted tokens per step. (8) is linear in 1/eta and launch: weighted least squares on relative
error. beta comes from published small-batch passes (llama-bench pp2..pp8).

`held_out()` refits without one chip and predicts that chip, for every chip (leave-one-chip-out).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

RESOURCES = Path(__file__).resolve().parents[2] / "resources"
MEASUREMENTS_FILE = RESOURCES / "apple_silicon_measurements.csv"
CHIPS_FILE = RESOURCES / "apple_silicon_chips.csv"
TIERS = ("base", "max", "ultra")
KINDS = ("tg_pp", "batch", "spec")
# mlx-lm's speculative_generate_step default; LM Studio's rows do not say how many they drafted
DRAFT_TOKENS_ASSUMED = 2
M2_TFLOPS_PER_CORE = 3.6 / 10  # Apple: M2, 10-core GPU, 3.6 TFLOPS


@dataclass(frozen=True)
class Chip:
    name: str
    generation: str
    tier: str  # base (base and Pro), max, ultra
    bandwidth_gbps: tuple[float, ...]  # per GPU variant, ascending
    gpu_cores: tuple[int, ...]  # per GPU variant, ascending
    tflops_top: float | None  # Apple's fp32 figure for the largest variant (M1, M2 only)
    url: str

    def tflops(self, cores: int) -> float:
        per_core = self.tflops_top / self.gpu_cores[-1] if self.tflops_top else M2_TFLOPS_PER_CORE
        return per_core * cores

    def bandwidth_for(self, cores: int | None) -> float:
        if cores in self.gpu_cores and len(self.bandwidth_gbps) == len(self.gpu_cores):
            return self.bandwidth_gbps[self.gpu_cores.index(cores)]
        return self.bandwidth_gbps[-1]


@dataclass(frozen=True)
class Measurement:
    line: int
    kind: str
    chip: str
    gpu_cores: int | None
    bandwidth_gbps: float
    framework: str
    model: str
    params_b: float
    layers: int
    quant: str
    model_gb: float
    pp_tokens: int | None
    pp_tps: float | None
    tg_tps: float | None
    draft_model: str
    draft_params_b: float | None
    draft_layers: int | None
    draft_gb: float | None
    draft_tokens: int | None
    acceptance: float | None
    spec_tps: float | None
    url: str


def _csv_rows(path: Path) -> list[tuple[int, dict]]:
    lines = path.read_text().splitlines()
    body = [(i + 1, s) for i, s in enumerate(lines) if s.strip() and not s.startswith("#")]
    reader = csv.DictReader([s for _, s in body])
    return [(body[k + 1][0], row) for k, row in enumerate(reader)]


def _num(row: dict, key: str, cast=float, required: bool = False):
    text = (row.get(key) or "").strip()
    if not text:
        if required:
            raise ValueError(f"column {key!r} is empty")
        return None
    return cast(text)


@lru_cache(maxsize=4)
def load_chips(path: Path = CHIPS_FILE) -> dict[str, Chip]:
    chips = {}
    for line, r in _csv_rows(path):
        try:
            chips[r["chip"]] = Chip(
                r["chip"],
                r["generation"],
                "base" if r["tier"] in ("base", "pro") else r["tier"],
                tuple(float(x) for x in r["bandwidth_gbps"].split("/")),
                tuple(int(x) for x in r["gpu_cores"].split("/")),
                _num(r, "gpu_tflops_top"),
                r["url"].strip(),
            )
        except (KeyError, ValueError) as e:
            raise ValueError(f"{path.name} line {line}: {e}") from e
    return chips


@lru_cache(maxsize=4)
def load_measurements(path: Path = MEASUREMENTS_FILE) -> tuple[Measurement, ...]:
    """Every row of the data file, checked: known kind and chip, a source URL, parseable numbers."""
    chips = load_chips()
    rows = []
    for line, r in _csv_rows(path):
        try:
            if r["kind"] not in KINDS:
                raise ValueError(f"kind {r['kind']!r} is not one of {KINDS}")
            if r["chip"] not in chips:
                raise ValueError(f"chip {r['chip']!r} is not in {CHIPS_FILE.name}")
            if not r["url"].startswith("https://"):
                raise ValueError("every row needs its source URL")
            draft_params = _num(r, "draft_params_b")
            draft_bits = _num(r, "draft_bits_per_weight")
            m = Measurement(
                line, r["kind"], r["chip"], _num(r, "gpu_cores", int),
                _num(r, "bandwidth_gbps", required=True), r["framework"], r["model"],
                _num(r, "params_b", required=True), _num(r, "layers", int, required=True),
                r["quant"], _num(r, "model_gb", required=True), _num(r, "pp_tokens", int),
                _num(r, "pp_tps"), _num(r, "tg_tps"), r["draft_model"], draft_params,
                _num(r, "draft_layers", int),
                draft_params * draft_bits / 8 if draft_params and draft_bits else None,
                _num(r, "draft_tokens", int), _num(r, "acceptance"), _num(r, "spec_tps"),
                r["url"].strip(),
            )
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{path.name} line {line}: {e}") from e
        rows.append(m)
    return tuple(rows)


# ---- the model ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceFit:
    mem_eff: dict = field(default_factory=dict)  # tier -> share of Apple's bandwidth reached
    launch: float = 0.0  # seconds per layer per forward (kernel launches, small ops)
    gpu_eff: dict = field(default_factory=dict)  # generation -> share of the peak (see module)
    verify_cost: float = 0.0  # beta of (10): one more verified token, in one-token passes

    def decode_seconds(self, tier: str, bandwidth_gbps: float, nbytes: float, layers: int):
        """(8): one token through a resident model."""
        return nbytes / (self.mem_eff[tier] * bandwidth_gbps * 1e9) + layers * self.launch

    def prompt_seconds_per_token(self, generation: str, tflops: float, params: float) -> float:
        """(9)."""
        eff = self.gpu_eff.get(generation, self.gpu_eff.get("all", 0.5))
        return 2 * params / (eff * tflops * 1e12)

    def verify_seconds(self, t1: float, n: float) -> float:
        """(10): a target pass over n tokens, from its one-token pass t1."""
        return t1 * (1 + self.verify_cost * (n - 1))

    def speculative_rate(self, t_target: float, t_draft: float, k: int, share: float) -> float:
        """(11): tokens/s with a draft model drafting k tokens per step."""
        tokens = 1.0 / (1.0 - min(share, 0.999))
        return tokens / (k * t_draft + self.verify_seconds(t_target, k + 1))


def tier_of(chip: str) -> str:
    return load_chips()[chip].tier


def fit_decode(rows) -> tuple[dict, float]:
    """(8) by weighted least squares on t = a_tier * GB / BW + launch * layers (relative error)."""
    pts = [m for m in rows if m.kind == "tg_pp" and m.tg_tps]
    tiers = [t for t in TIERS if any(tier_of(m.chip) == t for m in pts)]
    x = np.array([[m.model_gb / m.bandwidth_gbps * (tier_of(m.chip) == t) for t in tiers]
                  + [m.layers] for m in pts])
    y = np.array([1.0 / m.tg_tps for m in pts])
    coef, *_ = np.linalg.lstsq(x / y[:, None], np.ones(len(y)), rcond=None)
    launch = max(0.0, float(coef[-1]))
    if coef[-1] < 0:  # refit without launch rather than accept a negative overhead
        coef, *_ = np.linalg.lstsq(x[:, :-1] / y[:, None], np.ones(len(y)), rcond=None)
    eff = {t: 1.0 / float(coef[i]) for i, t in enumerate(tiers)}
    shared = sum(eff.values()) / len(eff)
    return {t: eff.get(t, shared) for t in TIERS}, launch


def fit_prompt(rows) -> dict:
    """(9): eta_gpu per generation (geometric mean of measured / peak), "all" for the rest.
    M1 and M2 share one value: their peaks are Apple's figures."""
    chips = load_chips()
    ratios: dict[str, list[float]] = {}
    for m in rows:
        if m.kind != "tg_pp" or not m.pp_tps or not m.gpu_cores or (m.pp_tokens or 0) < 256:
            continue
        chip = chips[m.chip]
        eff = m.pp_tps * 2 * m.params_b * 1e9 / (chip.tflops(m.gpu_cores) * 1e12)
        gen = "published" if chip.tflops_top else chip.generation
        ratios.setdefault(gen, []).append(math.log(eff))
        ratios.setdefault("all", []).append(math.log(eff))
    out = {g: math.exp(sum(v) / len(v)) for g, v in ratios.items()}
    pub = out.get("published", out.get("all", 0.5))
    return {**out, "M1": pub, "M2": pub}


def fit_verify(rows) -> float:
    """beta of (10) through the origin: v(n)/v(1) - 1 = beta (n - 1), from batch rows whose
    one-token pass is published too (same chip, model, quant, source)."""
    ones = {
        (m.chip, m.model, m.quant, m.url): 1.0 / m.pp_tps
        for m in rows
        if m.kind == "batch" and m.pp_tokens == 1
    }
    sxy = sxx = 0.0
    for m in rows:
        t1 = ones.get((m.chip, m.model, m.quant, m.url))
        if m.kind != "batch" or m.pp_tokens in (None, 1) or t1 is None:
            continue
        ratio = m.pp_tokens / m.pp_tps / t1
        sxy += (ratio - 1) * (m.pp_tokens - 1)
        sxx += (m.pp_tokens - 1) ** 2
    return sxy / sxx if sxx else 0.0


def fit(rows=None) -> DeviceFit:
    rows = load_measurements() if rows is None else rows
    mem_eff, launch = fit_decode(rows)
    return DeviceFit(mem_eff, launch, fit_prompt(rows), fit_verify(rows))


@lru_cache(maxsize=1)
def fitted() -> DeviceFit:
    """The fit on every published row (what predictions use)."""
    return fit()


# ---- leave-one-chip-out check ------------------------------------------------------------------
@dataclass(frozen=True)
class HeldOut:
    """One published figure predicted by a fit that never saw its chip."""

    what: str  # "tg", "pp" or "spec" (speedup over the target alone)
    chip: str
    label: str
    predicted: float
    measured: float
    url: str

    @property
    def error_pct(self) -> float:
        return 100.0 * (self.predicted - self.measured) / self.measured


def predict_tg(f: DeviceFit, m: Measurement) -> float:
    return 1.0 / f.decode_seconds(tier_of(m.chip), m.bandwidth_gbps, m.model_gb * 1e9, m.layers)


def predict_pp(f: DeviceFit, m: Measurement) -> float:
    chip = load_chips()[m.chip]
    return 1.0 / f.prompt_seconds_per_token(
        chip.generation, chip.tflops(m.gpu_cores), m.params_b * 1e9
    )


def predict_speedup(f: DeviceFit, m: Measurement, k: int | None = None) -> float:
    """Speedup of a spec row over its own published target-alone speed, (11)."""
    k = k or m.draft_tokens or DRAFT_TOKENS_ASSUMED
    t_target = 1.0 / m.tg_tps
    t_draft = f.decode_seconds(tier_of(m.chip), m.bandwidth_gbps, m.draft_gb * 1e9, m.draft_layers)
    return f.speculative_rate(t_target, t_draft, k, m.acceptance) * t_target


def held_out(rows=None, k: int | None = None) -> list[HeldOut]:
    """Refit without each chip in turn and predict that chip's published figures."""
    rows = load_measurements() if rows is None else rows
    out = []
    for chip in sorted({m.chip for m in rows}):
        f = fit([m for m in rows if m.chip != chip])
        for m in (m for m in rows if m.chip == chip):
            label = f"{m.framework} {m.model} {m.quant}"
            if m.kind == "tg_pp" and m.tg_tps:
                out.append(HeldOut("tg", chip, label, predict_tg(f, m), m.tg_tps, m.url))
            if m.kind == "tg_pp" and m.pp_tps and m.gpu_cores and (m.pp_tokens or 0) >= 256:
                out.append(HeldOut("pp", chip, label, predict_pp(f, m), m.pp_tps, m.url))
            if m.kind == "spec" and m.acceptance is not None:
                label += f" + {m.draft_model}, share {m.acceptance:.3f}"
                measured = m.spec_tps / m.tg_tps
                out.append(HeldOut("spec", chip, label, predict_speedup(f, m, k), measured, m.url))
    return out


def error_summary(results: list[HeldOut]) -> dict:
    """Per quantity: points, chips, mean |error| %, max |error| %, share within the goal."""
    goals = {"tg": 15.0, "pp": 15.0, "spec": 20.0}
    summary = {}
    for what, goal in goals.items():
        errs = [abs(r.error_pct) for r in results if r.what == what]
        if errs:
            summary[what] = {
                "points": len(errs),
                "chips": len({r.chip for r in results if r.what == what}),
                "mape": sum(errs) / len(errs),
                "max": max(errs),
                "goal_pct": goal,
                "within_goal": sum(e <= goal for e in errs) / len(errs),
            }
    return summary


def held_out_markdown(k: int | None = None) -> str:
    """The README's held-out table: per chip and quantity, points and mean |error|."""
    results = held_out(k=k)
    lines = [
        "| chip | generation: points, mean abs error (max) | prompt | speculative speedup |",
        "|---|---|---|---|",
    ]
    for chip in sorted({r.chip for r in results}):
        cells = []
        for what in ("tg", "pp", "spec"):
            errs = [abs(r.error_pct) for r in results if r.chip == chip and r.what == what]
            cells.append(f"{len(errs)}, {sum(errs) / len(errs):.1f}% ({max(errs):.0f}%)"
                         if errs else "-")
        lines.append(f"| {chip} | " + " | ".join(cells) + " |")
    s = error_summary(results)
    cells = [f"{s[w]['points']} on {s[w]['chips']} chips: {s[w]['mape']:.1f}%, "
             f"{s[w]['within_goal']:.0%} within {s[w]['goal_pct']:.0f}%" if w in s else "-"
             for w in ("tg", "pp", "spec")]
    lines.append("| **all** | " + " | ".join(cells) + " |")
    return "\n".join(lines)
