"""The catalog of known-good Mac pairs (resources/mac_pairs.json) and how each fits a machine.

For a RAM size: the target resident, streamed (how many layers pinned under the budget left
after macOS, the app, the draft and the caches), or not at all; and predicted tokens/s of
`ar` and `tree` from the cost model on one chip: the one asked for, else this Mac's, else the
chip of the Mac closest in RAM (engine.costmodel.devices.MACS). The chip's figures are the ones
`canopy bench --devices` uses (devices.chip_device). Predictions, not measurements.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import ConfigError
from . import devices as dv
from . import formulas as cm
from .device_fit import load_chips
from .passes import layout

CATALOG_FILE = Path(__file__).resolve().parents[2] / "resources" / "mac_pairs.json"


@dataclass(frozen=True)
class CatalogModel:
    repo_id: str
    family: str  # tokenizer family: a draft can serve targets of its own family only
    shape: dv.ModelShape

    @property
    def download_bytes(self) -> int:
        return int(self.shape.params * self.shape.bytes_per_param)


@dataclass(frozen=True)
class Fit:
    target: CatalogModel
    draft: CatalogModel
    ram_bytes: int
    budget_bytes: int  # target weight bytes that may stay in memory
    placement: str  # "resident" | "streamed" | "does not fit"
    layers_pinned: int
    layers: int
    device: str  # the chip variant the speeds assume, as `canopy bench --devices` names it
    ar_tokens_per_second: float
    tree_tokens_per_second: float


def load_catalog(path: str | Path = CATALOG_FILE) -> tuple[dict[str, CatalogModel], list]:
    """(models by repo id, [(target, draft) CatalogModel pairs])."""
    doc = json.loads(Path(path).read_text())
    models = {repo: CatalogModel(repo, m["family"], dv.load_shape(m["shape"]))
              for repo, m in doc["models"].items()}
    pairs = [(models[p["target"]], models[p["draft"]]) for p in doc["pairs"]]
    for target, draft in pairs:
        if target.family != draft.family:
            raise ValueError(f"catalog pair {target.repo_id} / {draft.repo_id}: tokenizer "
                             "families differ")
    return models, pairs


def machine_ram_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def closest_device(ram_bytes: int) -> dv.Device:
    """The Mac of devices.MACS closest in RAM (its chip's figures from the chips file)."""
    return min(dv.mac_devices(), key=lambda d: abs(d.ram_gb * dv.GB - ram_bytes))


def this_mac_chip() -> str | None:
    """The Apple chip this process runs on ("M2 Pro"); None on other machines."""
    if sys.platform != "darwin":
        return None
    try:
        brand = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                               text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    name = brand.strip().removeprefix("Apple ").strip()
    return name if name in load_chips() else None


def chip_device(spec: str, ram_bytes: int) -> dv.Device:
    """A chip ("M4 Pro", its largest GPU) or one variant ("M4 Pro (16-core GPU)"), with the SSD
    figure of the Mac of devices.MACS that has it, else the slowest SSD there (no figure)."""
    chips = {c.lower(): c for c in load_chips()}
    name, _, cores = spec.strip().partition("(")
    chip = chips.get(name.strip().lower())
    count = cores.split("-")[0].strip() if cores else ""
    if chip is None or (count and not count.isdigit()):
        raise ConfigError(f"unknown chip {spec!r}: give one of {', '.join(load_chips())}, "
                          "optionally with a GPU variant such as \"M4 Pro (16-core GPU)\"")
    variants = load_chips()[chip].gpu_cores
    if count and int(count) not in variants:
        raise ConfigError(f"{chip} has {'/'.join(map(str, variants))}-core GPUs, not {count}")
    macs = dv.mac_devices()
    same = [m for m in macs if m.chip.startswith(chip + " (")]
    ssd = same[0].ssd_gbps if same else min(m.ssd_gbps for m in macs)
    device = dv.chip_device(chip, int(count) if count else None, ssd_gbps=ssd)
    return replace(device, ram_gb=round(ram_bytes / dv.GB))


def catalog_device(ram_bytes: int, chip: str | None = None) -> dv.Device:
    """The device the catalog's speeds assume: `chip`, else this Mac's chip, else the chip of
    the Mac closest in RAM."""
    chip = chip or this_mac_chip()
    return chip_device(chip, ram_bytes) if chip else closest_device(ram_bytes)


def fit(target: CatalogModel, draft: CatalogModel, ram_bytes: int,
        device: dv.Device | None = None) -> Fit:
    device = device or catalog_device(ram_bytes)
    timing = dv.device_timing(device, target.shape, draft.shape)
    budget = int(ram_bytes - dv.OS_AND_DRAFT_GB * dv.GB)
    shape = target.shape
    if shape.params * shape.bytes_per_param <= budget:
        placement, limit = "resident", None
    elif budget >= shape.base_bytes + shape.layer_bytes:  # head + one layer at a time
        placement, limit = "streamed", budget
    else:
        return Fit(target, draft, ram_bytes, max(budget, 0), "does not fit", 0, shape.layers,
                   device.chip, 0.0, 0.0)
    pinned, _ = layout(timing, limit)
    acc = dv.profile_acceptance()
    ar = cm.predict(timing, acc, "ar", budget_bytes=limit)
    tree = cm.predict(timing, acc, "tree", budget_bytes=limit)
    return Fit(target, draft, ram_bytes, budget, placement,
               shape.layers if limit is None else pinned, shape.layers, device.chip,
               ar.tokens_per_second, tree.tokens_per_second)


def compatible_drafts(target_repo: str, models: dict[str, CatalogModel]) -> list[CatalogModel]:
    """Catalog drafts whose tokenizer family is the target's (smaller models only)."""
    target = models[target_repo]
    return [m for m in models.values() if m.family == target.family
            and m.shape.params < target.shape.params]


def catalog_markdown(ram_bytes: int | None = None, chip: str | None = None) -> str:
    ram = ram_bytes or machine_ram_bytes()
    _, pairs = load_catalog()
    device = catalog_device(ram, chip)
    mac = f", as in a {device.name}" if device.name != device.chip else ""
    chip = device.chip.split(" (")[0]
    assumed = "" if any(m.chip.startswith(chip + " (") for m in dv.mac_devices()) else (
        " (no figure for this chip: the slowest in devices.MACS)")
    lines = [f"Fit for {ram / dv.GB:.0f} GB of RAM (predicted, not measured; speeds on an "
             f"{device.chip}{mac}: {device.mem_gbps:g} GB/s memory, {device.ssd_gbps:g} GB/s "
             f"SSD{assumed}; other chips: --chip):", "",
             "| target | draft | download GB | placement | layers pinned | ar tok/s | tree tok/s |",
             "|---|---|---|---|---|---|---|"]
    for target, draft in pairs:
        f = fit(target, draft, ram, device)
        size = (target.download_bytes + draft.download_bytes) / dv.GB
        lines.append(
            f"| {target.repo_id} | {draft.repo_id} | {size:.1f} | {f.placement} | "
            f"{f.layers_pinned}/{f.layers} | {f.ar_tokens_per_second:.1f} | "
            f"{f.tree_tokens_per_second:.1f} |")
    return "\n".join(lines)
