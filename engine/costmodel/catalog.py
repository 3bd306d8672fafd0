"""The catalog of known-good Mac pairs (resources/mac_pairs.json) and how each fits a machine.

For a RAM size: the target resident, streamed (how many layers pinned under the budget left
after macOS, the app, the draft and the caches), or not at all; and predicted tokens/s of
`ar` and `tree` from the cost model with the Apple Silicon profile closest in RAM
(engine.costmodel.devices). Predictions, not measurements.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from . import devices as dv
from . import formulas as cm
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
    device: str  # the Apple Silicon profile the speeds assume
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
    return min(dv.DEVICES, key=lambda d: abs(d.ram_gb * dv.GB - ram_bytes))


def fit(target: CatalogModel, draft: CatalogModel, ram_bytes: int,
        device: dv.Device | None = None) -> Fit:
    device = device or closest_device(ram_bytes)
    timing = dv.device_timing(device, target.shape, draft.shape)
    budget = int(ram_bytes - dv.OS_AND_DRAFT_GB * dv.GB)
    shape = target.shape
    if shape.params * shape.bytes_per_param <= budget:
        placement, limit = "resident", None
    elif budget >= shape.base_bytes + shape.layer_bytes:  # head + one layer at a time
        placement, limit = "streamed", budget
    else:
        return Fit(target, draft, ram_bytes, max(budget, 0), "does not fit", 0, shape.layers,
                   device.name, 0.0, 0.0)
    pinned, _ = layout(timing, limit)
    acc = dv.profile_acceptance()
    ar = cm.predict(timing, acc, "ar", budget_bytes=limit)
    tree = cm.predict(timing, acc, "tree", budget_bytes=limit)
    return Fit(target, draft, ram_bytes, budget, placement,
               shape.layers if limit is None else pinned, shape.layers, device.name,
               ar.tokens_per_second, tree.tokens_per_second)


def compatible_drafts(target_repo: str, models: dict[str, CatalogModel]) -> list[CatalogModel]:
    """Catalog drafts whose tokenizer family is the target's (smaller models only)."""
    target = models[target_repo]
    return [m for m in models.values() if m.family == target.family
            and m.shape.params < target.shape.params]


def catalog_markdown(ram_bytes: int | None = None) -> str:
    ram = ram_bytes or machine_ram_bytes()
    _, pairs = load_catalog()
    lines = [f"Fit for {ram / dv.GB:.0f} GB of RAM (predicted, not measured; speeds as a "
             f"{closest_device(ram).name}):", "",
             "| target | draft | download GB | placement | layers pinned | ar tok/s | tree tok/s |",
             "|---|---|---|---|---|---|---|"]
    for target, draft in pairs:
        f = fit(target, draft, ram)
        size = (target.download_bytes + draft.download_bytes) / dv.GB
        lines.append(
            f"| {target.repo_id} | {draft.repo_id} | {size:.1f} | {f.placement} | "
            f"{f.layers_pinned}/{f.layers} | {f.ar_tokens_per_second:.1f} | "
            f"{f.tree_tokens_per_second:.1f} |")
    return "\n".join(lines)
