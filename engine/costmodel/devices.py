"""Predictions for Apple Silicon Macs from published figures, with the same cost model.

No Mac is measured here. Each machine is described by Apple's unified-memory bandwidth and GPU
figures (resources/apple_silicon_chips.csv) and, for the streamed table, an internal SSD
sequential read speed (common review figures, rounded); each model by its published
configuration. The efficiencies are fitted to published measurements (engine.costmodel.device_fit,
leave-one-chip-out errors in the README):

    layer over n tokens: c(n) = c(1) * (1 + beta * (n - 1)),
                         c(1) = bytes / (eta_mem[tier] * BW) + launch                     (7)
    streamed layer read: r = bytes / (eta_ssd * SSD)

and the acceptance from a calibrated draft (formulas.calibrated_tree_tokens) whose top-4
candidates have the probabilities of PROFILE. `canopy bench --devices` prints the tables;
`canopy bench --devices --target SHAPE [--draft SHAPE] [--json]` predicts any model on every chip.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError
from . import formulas as cm
from .device_fit import DRAFT_TOKENS_ASSUMED, error_summary, fitted, held_out, load_chips

GB = 1e9
ETA_SSD = 0.8  # fraction of the published SSD read speed reached (not fitted: no published data)
STEP_OVERHEAD, NODE_OVERHEAD = 3e-3, 5e-5
PROFILE = (0.75, 0.10, 0.04, 0.02)  # draft top-4 probabilities (calibrated): alpha ~ 0.75
PROFILE_LOW = (0.6, 0.12, 0.05, 0.03)  # a weaker draft, for the sensitivity rows
REUSE = 0.3  # P(the pipeline's speculative continuation is reused)
TOKENS = (1, 2, 4, 8, 16, 32, 48, 64)


@dataclass(frozen=True)
class Device:
    name: str
    ram_gb: int
    mem_gbps: float  # unified memory bandwidth (Apple)
    ssd_gbps: float  # internal SSD sequential read
    gpu_tflops: float  # fp32 (fp16 runs at the same rate on these GPUs)
    tier: str = "base"  # base (base and Pro chips), max, ultra: device_fit.TIERS
    chip: str = ""  # the chip variant, as `canopy bench --devices` names it: "M4 (10-core GPU)"


@dataclass(frozen=True)
class ModelShape:
    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    bytes_per_param: float  # bf16 2.0; MLX 4-bit group 64 ~0.5625 (scales and biases)

    @property
    def layer_params(self) -> int:
        head_dim = self.hidden // self.heads
        attn = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_heads * head_dim
        return attn + 3 * self.hidden * self.intermediate

    @property
    def head_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def layer_bytes(self) -> int:
        return int(self.layer_params * self.bytes_per_param)

    @property
    def base_bytes(self) -> int:  # embeddings (+ an untied head)
        return int(self.head_params * (1 if self.tied else 2) * self.bytes_per_param)

    @property
    def target_bytes_gb(self) -> float:
        return (self.layers * self.layer_bytes + self.base_bytes) / GB

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + self.head_params * (1 if self.tied else 2)


# The Macs of the streamed table (and the catalog's default by RAM): name, RAM GB, chip, GPU
# cores, internal SSD GB/s (review figures, rounded). Bandwidth, TFLOPS and tier come from the
# chip's row of resources/apple_silicon_chips.csv (chip_device), as in `canopy bench --devices`.
MACS = (
    ("MacBook Air M2", 16, "M2", 10, 2.9),
    ("Mac mini M4", 24, "M4", 10, 2.9),
    ("MacBook Pro M3 Pro", 36, "M3 Pro", 18, 5.0),
    ("Mac mini M4 Pro", 48, "M4 Pro", 20, 5.5),
)
QWEN_14B = ModelShape("Qwen2.5-14B-Instruct bf16", 48, 5120, 13824, 40, 8, 152064, False, 2.0)
QWEN_05B_4BIT = ModelShape("Qwen2.5-0.5B-Instruct-4bit", 24, 896, 4864, 14, 2, 151936, True, 0.5625)
BUDGETS_GB = (8, 16, 24)
OS_AND_DRAFT_GB = 6  # RAM kept for macOS, the app, the draft and KV caches


def one_token_seconds(device: Device, nbytes: float, layers: int = 1) -> float:
    """c(1) of (7) for `layers` layers holding `nbytes` (the fitted decode model)."""
    return fitted().decode_seconds(device.tier, device.mem_gbps, nbytes, layers)


def device_timing(device: Device, target: ModelShape, draft: ModelShape) -> cm.Timing:
    """Timing (7) of a pair on a device: curves over TOKENS."""
    xs = tuple(float(n) for n in TOKENS)
    verify = fitted().verify_seconds

    def curve(f):
        return cm.Curve(xs, tuple(f(n) for n in xs))

    def draft_forward(m):
        return verify(one_token_seconds(device, draft.layers * draft.layer_bytes + draft.base_bytes,
                                        draft.layers), m)

    layer_1 = one_token_seconds(device, target.layer_bytes, 1)
    head_1 = one_token_seconds(device, target.head_params * target.bytes_per_param, 0)
    return cm.Timing(
        draft_forward=curve(draft_forward),
        layer_compute=curve(lambda n: verify(layer_1, n)),
        head_compute=curve(lambda n: verify(head_1, n)),
        layer_bytes=(target.layer_bytes,) * target.layers,
        base_bytes=target.base_bytes,
        read_bandwidth=ETA_SSD * device.ssd_gbps * GB,
        step_overhead=STEP_OVERHEAD,
        node_overhead=NODE_OVERHEAD,
    )


def profile_acceptance(profile=PROFILE, max_nodes: int = 48, width: int = 4) -> cm.Acceptance:
    return cm.Acceptance(
        chain_alpha=(profile[0],),
        tree_tokens=tuple(
            cm.calibrated_tree_tokens(profile, n, width) for n in range(1, max_nodes + 1)
        ),
        start_tokens_tree=1.5,
        start_tokens_chain=1.0 + profile[0] ** 4,
        reuse=REUSE,
    )


def predictions(devices=None, target=QWEN_14B, draft=QWEN_05B_4BIT, profile=PROFILE,
                acceptance: cm.Acceptance | None = None) -> list:
    """One row per (device, budget) that fits the device's memory (and `resident` if it fits);
    devices: mac_devices() by default; the draft's acceptance from `profile`, or a measured
    `acceptance` (engine.bench.coder)."""
    acc = acceptance or profile_acceptance(profile)
    rows = []
    for dev in devices or mac_devices():
        timing = device_timing(dev, target, draft)
        budgets = [b for b in BUDGETS_GB if b + OS_AND_DRAFT_GB <= dev.ram_gb]
        if timing.target_bytes / GB + OS_AND_DRAFT_GB <= dev.ram_gb:
            budgets.append(None)
        for gb in budgets:
            budget = None if gb is None else int(gb * GB)
            ar = cm.predict(timing, acc, "ar", budget_bytes=budget)
            chain = cm.predict(timing, acc, "chain", budget_bytes=budget, k=4)
            tree = cm.predict(timing, acc, "tree", budget_bytes=budget)
            pipe = cm.predict(timing, acc, "tree", budget_bytes=budget, pipeline=True)
            rows.append(
                {
                    "device": dev,
                    "budget_gb": gb,
                    "streamed": ar.streamed_layers,
                    "ar": ar,
                    "chain": chain,
                    "tree": tree,
                    "pipeline": pipe,
                }
            )
    return rows


def budget_label(gb: int | None) -> str:
    return "resident" if gb is None else f"{gb} GB"


def device_table_markdown(acceptance: cm.Acceptance | None = None, about: str = "") -> str:
    """The streamed-target table; with a measured `acceptance` (described by `about`) instead of
    the calibrated-draft PROFILE."""
    t, d, f, bands = QWEN_14B, QWEN_05B_4BIT, fitted(), error_bands()
    title = "### Predicted, not measured: Apple Silicon"
    lines = [
        title + (f", with {about}" if acceptance else ""),
        "",
        f"Target {t.name} ({t.params / 1e9:.1f} B parameters, {t.layers} layers of "
        f"{t.layer_bytes / GB:.2f} GB, {t.base_bytes / GB:.2f} GB embeddings + head), draft "
        f"{d.name} (~{(d.layers * d.layer_bytes + d.base_bytes) / GB:.2f} GB). Budget = target "
        "weight bytes kept in memory; the rest is read from the SSD every target pass.",
        "",
        "| Mac (RAM) | memory GB/s | SSD GB/s | GPU TFLOPS | budget | layers streamed | ar tok/s "
        "| chain k=4 | tree (auto) | tree + pipeline | tree / ar |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in predictions(acceptance=acceptance):
        dev, tree = row["device"], row["tree"]
        budget = budget_label(row["budget_gb"])
        lines.append(
            f"| {dev.name} ({dev.ram_gb} GB) | {dev.mem_gbps:g} | {dev.ssd_gbps:g} | "
            f"{dev.gpu_tflops:g} | {budget} | {row['streamed']} | "
            f"{row['ar'].tokens_per_second:.2f} | {row['chain'].tokens_per_second:.2f} | "
            f"{tree.tokens_per_second:.2f} (N={tree.nodes}) | "
            f"{row['pipeline'].tokens_per_second:.2f} | "
            f"{tree.tokens_per_second / row['ar'].tokens_per_second:.1f}x |"
        )
    low = predictions(profile=PROFILE_LOW)
    gain = {id(r): r["tree"].tokens_per_second / r["ar"].tokens_per_second for r in low}
    worst = min(low, key=lambda r: gain[id(r)])
    reuse = acceptance.reuse if acceptance else REUSE
    if acceptance:
        e = acceptance.tree_tokens
        picks = [n for n in (5, 17, 33) if n < len(e)] + [len(e)]
        draft_text = (f"the measured acceptance: first-token {acceptance.chain_alpha[0]:.2f}, "
                      f"tree E(N) {', '.join(f'{n}: {e[n - 1]:.2f}' for n in picks)} tokens per "
                      f"pass (flat beyond {len(e)} nodes)")
    else:
        draft_text = (f"a calibrated draft whose top-4 candidates carry probabilities {PROFILE} "
                      f"(first-token acceptance ~{PROFILE[0]:.2f})")
    lines += [
        "",
        f"Assumptions: {draft_text}; memory bandwidth reached at "
        f"{f.mem_eff['base']:.0%} (base/Pro chips; fitted), {f.launch * 1e6:.0f} us per layer "
        f"per forward (fitted), each extra verified token costing {f.verify_cost:.2f} of a "
        f"one-token pass (fitted to published llama.cpp small-batch passes); SSD sequential read "
        f"at {ETA_SSD:.0%} of the review figure; {STEP_OVERHEAD * 1e3:.0f} ms of Python per step; "
        f"{OS_AND_DRAFT_GB} GB of RAM left to macOS, the draft and the caches; 2 layers of "
        f"prefetch; pipeline reuse probability {reuse:.2g}. GPU TFLOPS: cores x M2's per-core rate "
        "for M3/M4 (Apple publishes none). With a weaker draft (top-4 "
        f"{PROFILE_LOW}) the smallest tree/ar gain is {gain[id(worst)]:.2f}x "
        f"({worst['device'].name}, {budget_label(worst['budget_gb'])}). Bands: resident `ar` "
        f"±{bands['ar']:.0f}%, speculative ±{bands['tree']:.0f}% (leave-one-chip-out errors "
        "of published figures); streamed rows add the unmeasured SSD figure.",
    ]
    return "\n".join(lines)



# ---- any model shape on every chip ----------------------------------------------------------
# name -> (layers, hidden, intermediate, heads, kv heads, vocab, tied): published config.json
CATALOG = {
    "qwen2.5-0.5b": (24, 896, 4864, 14, 2, 151936, True),
    "qwen2.5-1.5b": (28, 1536, 8960, 12, 2, 151936, True),
    "qwen2.5-3b": (36, 2048, 11008, 16, 2, 151936, True),
    "qwen2.5-7b": (28, 3584, 18944, 28, 4, 152064, False),
    "qwen2.5-14b": (48, 5120, 13824, 40, 8, 152064, False),
    "qwen2.5-32b": (64, 5120, 27648, 40, 8, 152064, False),
    "qwen2.5-72b": (80, 8192, 29568, 64, 8, 152064, False),
    "llama-3.2-1b": (16, 2048, 8192, 32, 8, 128256, True),
    "llama-3.2-3b": (28, 3072, 8192, 24, 8, 128256, True),
    "llama-3.1-8b": (32, 4096, 14336, 32, 8, 128256, False),
    "llama-3.1-70b": (80, 8192, 28672, 64, 8, 128256, False),
}
# storage suffix -> bytes per parameter (MLX affine, group 64: + fp16 scale and bias per group)
STORAGE = {"bf16": 2.0, "fp16": 2.0, "fp32": 4.0, "8bit": 1 + 4 / 64, "4bit": 0.5 + 4 / 64}
DEFAULT_DRAFT = "qwen2.5-0.5b-4bit"
QWEN_14B_NAME = "qwen2.5-14b-bf16"  # the README's streamed-table target
MODES_BY_CHIP = ("ar", "prompt", "chain", "tree")


def catalog_names() -> list[str]:
    return [f"{n}-{s}" for n in CATALOG for s in ("4bit", "8bit", "bf16")]


def load_shape(spec: str) -> ModelShape:
    """A model folder, its config.json, or a catalog name such as "qwen2.5-7b-4bit"."""
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        return _shape_from_config(json.loads(path.read_text()), path.parent.name)
    name, _, storage = spec.lower().rpartition("-")
    if name in CATALOG and storage in STORAGE:
        return ModelShape(spec, *CATALOG[name], STORAGE[storage])
    raise ModelError(
        f"unknown model shape {spec!r}: give a model folder (with config.json) or a catalog "
        f"name NAME-4bit|-8bit|-bf16 with NAME one of {', '.join(CATALOG)}"
    )


def _shape_from_config(cfg: dict, name: str) -> ModelShape:
    cfg = cfg.get("text_config", cfg)
    try:
        hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
        q = cfg.get("quantization") or cfg.get("quantization_config") or {}
        if q.get("bits"):
            per_param = q["bits"] / 8 + 4 / q.get("group_size", 64)
        else:
            per_param = 4.0 if cfg.get("torch_dtype") == "float32" else 2.0
        return ModelShape(
            name, cfg["num_hidden_layers"], hidden, cfg["intermediate_size"], heads,
            cfg.get("num_key_value_heads", heads), cfg["vocab_size"],
            bool(cfg.get("tie_word_embeddings", False)), per_param,
        )
    except KeyError as e:
        raise ModelError(f"config.json of {name} has no {e.args[0]!r}: not a decoder model") from e


def chip_device(chip: str, cores: int | None = None, name: str = "", ram_gb: int = 0,
                ssd_gbps: float = 0.0) -> Device:
    """One GPU variant of a chip (`cores`; None: the largest) from Apple's figures in
    resources/apple_silicon_chips.csv: the one source of per-chip figures."""
    c = load_chips()[chip]
    cores = c.gpu_cores[-1] if cores is None else cores
    variant = f"{c.name} ({cores}-core GPU)"
    return Device(name or variant, ram_gb, c.bandwidth_for(cores), ssd_gbps, c.tflops(cores),
                  c.tier, variant)


def chip_devices() -> list[Device]:
    """Every GPU variant of every M1-M4 chip, from Apple's figures (no SSD figure: resident)."""
    return [chip_device(chip.name, cores) for chip in load_chips().values()
            for cores in chip.gpu_cores]


def mac_devices() -> tuple[Device, ...]:
    """The Macs of MACS, their chip figures from chip_device."""
    return tuple(chip_device(chip, cores, name, ram, ssd) for name, ram, chip, cores, ssd in MACS)


def error_bands() -> dict[str, float]:
    """± band per mode, in percent: the leave-one-chip-out mean absolute error."""
    s = error_summary(held_out())
    spec = s.get("spec", {}).get("mape", float("nan"))
    return {"ar": s["tg"]["mape"], "prompt": s["pp"]["mape"], "chain": spec, "tree": spec}


def chip_rows(target: ModelShape, draft: ModelShape, profile=PROFILE) -> list[dict]:
    """One row per chip variant and mode (resident target): name, predicted tok/s, band."""
    f, acc, bands = fitted(), profile_acceptance(profile), error_bands()
    chips = {c.name: c for c in load_chips().values()}
    rows = []
    for dev in chip_devices():
        chip = chips[dev.name.split(" (")[0]]
        timing = device_timing(dev, target, draft)
        rate = {
            "ar": cm.predict(timing, acc, "ar").tokens_per_second,
            "prompt": 1 / f.prompt_seconds_per_token(chip.generation, dev.gpu_tflops,
                                                     target.params),
            "chain": cm.predict(timing, acc, "chain", k=DRAFT_TOKENS_ASSUMED).tokens_per_second,
        }
        tree = cm.predict(timing, acc, "tree")
        rate["tree"] = tree.tokens_per_second
        for mode in MODES_BY_CHIP:
            band = bands[mode]
            rows.append({
                "chip": dev.name, "bandwidth_gbps": dev.mem_gbps, "mode": mode,
                "tokens_per_second": rate[mode], "band_percent": band,
                "low": rate[mode] * (1 - band / 100), "high": rate[mode] * (1 + band / 100),
                "tree_nodes": tree.nodes if mode == "tree" else None,
            })
    return rows


def chip_table_markdown(target: ModelShape, draft: ModelShape) -> str:
    rows = chip_rows(target, draft)
    bands = error_bands()
    lines = [
        f"### Predicted, not measured: {target.name} on every Apple Silicon chip (resident)",
        "",
        f"Target {target.name} ({target.params / 1e9:.1f} B parameters, "
        f"{target.target_bytes_gb:.1f} GB), draft {draft.name}. ± = leave-one-chip-out mean "
        f"absolute error of published figures: generation ±{bands['ar']:.0f}%, prompt "
        f"±{bands['prompt']:.0f}%, speculative ±{bands['chain']:.0f}%.",
        "",
        f"| chip | GB/s | ar tok/s ±{bands['ar']:.0f}% | prompt tok/s ±{bands['prompt']:.0f}% | "
        f"chain k=2 ±{bands['chain']:.0f}% | tree (auto) ±{bands['tree']:.0f}% | tree / ar |",
        "|---|---|---|---|---|---|---|",
    ]
    for i in range(0, len(rows), len(MODES_BY_CHIP)):
        r = {row["mode"]: row for row in rows[i:i + len(MODES_BY_CHIP)]}
        ar = r["ar"]["tokens_per_second"]
        lines.append(
            f"| {r['ar']['chip']} | {r['ar']['bandwidth_gbps']:g} | {ar:.1f} | "
            f"{r['prompt']['tokens_per_second']:.0f} | {r['chain']['tokens_per_second']:.1f} | "
            f"{r['tree']['tokens_per_second']:.1f} (N={r['tree']['tree_nodes']}) | "
            f"{r['tree']['tokens_per_second'] / ar:.2f}x |"
        )
    return "\n".join(lines)
