"""Predictions for Apple Silicon Macs from published figures, with the same cost model.

Nothing here is measured: each machine is described by its unified-memory bandwidth, internal
SSD sequential read speed and GPU fp32 throughput (Apple's figures where Apple publishes them,
common review measurements otherwise, rounded), each model by its published configuration. The
timing of one forward follows from a roofline with efficiencies:

    layer over n tokens: c(n) = max(bytes / (eta_mem * BW), 2 * params * n / (eta_gpu * FLOPS))
                                + launch                                                  (7)
    streamed layer read: r = bytes / (eta_ssd * SSD)

and the acceptance from a calibrated draft (formulas.calibrated_tree_tokens) whose top-4
candidates have the probabilities of PROFILE. `python -m engine.costmodel.devices` (or `canopy bench
--devices`) prints the table.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import formulas as cm

GB = 1e9
ETA_MEM, ETA_GPU, ETA_SSD = 0.75, 0.5, 0.8  # fraction of the published peak actually reached
LAUNCH = 60e-6  # seconds of kernel launches and Python per layer per forward
STEP_OVERHEAD, NODE_OVERHEAD = 3e-3, 5e-5
PROFILE = (0.75, 0.10, 0.04, 0.02)  # draft top-4 probabilities (calibrated): alpha ~ 0.75
PROFILE_LOW = (0.6, 0.12, 0.05, 0.03)  # a weaker draft, for the sensitivity rows
REUSE = 0.3  # P(the pipeline's speculative continuation is reused)
TOKENS = (1, 2, 4, 8, 16, 32, 48, 64)


@dataclass(frozen=True)
class Device:
    name: str
    ram_gb: int
    mem_gbps: float  # unified memory bandwidth
    ssd_gbps: float  # internal SSD sequential read
    gpu_tflops: float  # fp32 (fp16 runs at the same rate on these GPUs)


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
    def params(self) -> int:
        return self.layers * self.layer_params + self.head_params * (1 if self.tied else 2)


DEVICES = (
    Device("MacBook Air M2", 16, 100, 2.9, 3.6),
    Device("Mac mini M4", 24, 120, 2.9, 4.3),
    Device("MacBook Pro M3 Pro", 36, 150, 5.0, 7.4),
    Device("Mac mini M4 Pro", 48, 273, 5.5, 9.2),
)
QWEN_14B = ModelShape("Qwen2.5-14B-Instruct bf16", 48, 5120, 13824, 40, 8, 152064, False, 2.0)
QWEN_05B_4BIT = ModelShape("Qwen2.5-0.5B-Instruct-4bit", 24, 896, 4864, 14, 2, 151936, True, 0.5625)
BUDGETS_GB = (8, 16, 24)
OS_AND_DRAFT_GB = 6  # RAM kept for macOS, the app, the draft and KV caches


def roofline(device: Device, nbytes: float, params: float, n: float) -> float:
    memory = nbytes / (ETA_MEM * device.mem_gbps * GB)
    compute = 2 * params * n / (ETA_GPU * device.gpu_tflops * 1e12)
    return max(memory, compute)


def device_timing(device: Device, target: ModelShape, draft: ModelShape) -> cm.Timing:
    """Timing (7) of a pair on a device: curves over TOKENS."""
    xs = tuple(float(n) for n in TOKENS)

    def curve(f):
        return cm.Curve(xs, tuple(f(n) for n in xs))

    def draft_forward(m):
        body = draft.layers * (roofline(device, draft.layer_bytes, draft.layer_params, m) + LAUNCH)
        return body + roofline(device, draft.base_bytes, draft.head_params, m)

    return cm.Timing(
        draft_forward=curve(draft_forward),
        layer_compute=curve(
            lambda n: roofline(device, target.layer_bytes, target.layer_params, n) + LAUNCH
        ),
        head_compute=curve(
            lambda n: roofline(
                device, target.head_params * target.bytes_per_param, target.head_params, n
            )
        ),
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


def predictions(devices=DEVICES, target=QWEN_14B, draft=QWEN_05B_4BIT, profile=PROFILE) -> list:
    """One row per (device, budget) that fits the device's memory (and `resident` if it fits)."""
    acc = profile_acceptance(profile)
    rows = []
    for dev in devices:
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


def device_table_markdown() -> str:
    t, d = QWEN_14B, QWEN_05B_4BIT
    lines = [
        "### Predicted, not measured: Apple Silicon",
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
    for row in predictions():
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
    lines += [
        "",
        "Assumptions: a calibrated draft whose top-4 candidates carry probabilities "
        f"{PROFILE} (first-token acceptance ~{PROFILE[0]:.2f}); memory bandwidth reached at "
        f"{ETA_MEM:.0%}, GPU fp32 peak at {ETA_GPU:.0%}, SSD sequential read at {ETA_SSD:.0%} of "
        f"the published figure; {LAUNCH * 1e6:.0f} us of launch overhead per layer per forward, "
        f"{STEP_OVERHEAD * 1e3:.0f} ms of Python per step; {OS_AND_DRAFT_GB} GB of RAM left to "
        "macOS, the draft and the caches; 2 layers of prefetch; "
        f"pipeline reuse probability {REUSE}. Figures: Apple's memory bandwidth; SSD and GPU "
        "throughput from common reviews, rounded. With a weaker draft (top-4 "
        f"{PROFILE_LOW}) the smallest tree/ar gain is {gain[id(worst)]:.1f}x "
        f"({worst['device'].name}, {budget_label(worst['budget_gb'])}).",
    ]
    return "\n".join(lines)

