"""The Mac pair catalog: consistent families, placements that follow RAM, compatible drafts,
and per-chip speeds that are `canopy bench --devices`'s."""

import pytest

from engine.costmodel import catalog
from engine.costmodel import devices as dv
from engine.costmodel.catalog import (
    catalog_device,
    catalog_markdown,
    closest_device,
    compatible_drafts,
    fit,
    load_catalog,
)
from engine.errors import ConfigError


def test_catalog_pairs_share_a_tokenizer_family():
    models, pairs = load_catalog()
    assert pairs and all(t.family == d.family for t, d in pairs)
    assert all(r.startswith("mlx-community/") for r in models)
    for t, d in pairs:
        assert d.download_bytes < t.download_bytes / 4  # a draft is much smaller


def test_placement_follows_ram():
    models, _ = load_catalog()
    target = models["mlx-community/Qwen2.5-32B-Instruct-4bit"]
    draft = models["mlx-community/Qwen2.5-0.5B-Instruct-4bit"]
    small, mid, big = (fit(target, draft, gb * dv.GB) for gb in (7, 20, 64))
    assert small.placement == "does not fit" and small.tree_tokens_per_second == 0
    assert mid.placement == "streamed" and 0 < mid.layers_pinned < mid.layers
    assert big.placement == "resident" and big.layers_pinned == big.layers
    assert big.ar_tokens_per_second > mid.ar_tokens_per_second > 0
    more = fit(target, draft, 26 * dv.GB)
    assert more.layers_pinned >= mid.layers_pinned


def test_compatible_drafts_and_table():
    models, _ = load_catalog()
    drafts = compatible_drafts("mlx-community/Meta-Llama-3.1-70B-Instruct-4bit", models)
    names = {d.repo_id for d in drafts}
    assert "mlx-community/Llama-3.2-1B-Instruct-4bit" in names
    assert not any("Qwen" in n for n in names)
    assert closest_device(24 * dv.GB).ram_gb == 24
    assert closest_device(24 * dv.GB).chip == "M4 (10-core GPU)"
    table = catalog_markdown(16 * dv.GB)
    rows = [line for line in table.splitlines() if line.startswith("| mlx-community/")]
    assert "predicted, not measured" in table and len(rows) == 6


def test_catalog_speeds_are_the_per_chip_figures_of_bench_devices():
    """One source: on every chip variant, the catalog's resident ar/tree tok/s equal the rows of
    `canopy bench --devices --target T --draft D` (devices.chip_rows) for the same chip."""
    _, pairs = load_catalog()
    ram = 512 * dv.GB  # every catalog target resident
    for target, draft in pairs:
        rows = {(r["chip"], r["mode"]): r["tokens_per_second"]
                for r in dv.chip_rows(target.shape, draft.shape)}
        chips = {chip for chip, _ in rows}
        assert len(chips) > 20
        for chip in chips:
            f = fit(target, draft, ram, catalog_device(ram, chip))
            assert f.placement == "resident" and f.device == chip
            assert f.ar_tokens_per_second == pytest.approx(rows[chip, "ar"], rel=1e-9)
            assert f.tree_tokens_per_second == pytest.approx(rows[chip, "tree"], rel=1e-9)


def test_default_device_by_ram_uses_the_chip_figures():
    """The Macs of the streamed table (the catalog's default on a non-Mac) carry their chip's
    figures from the chips file, not figures of their own."""
    by_chip = {d.chip: d for d in dv.chip_devices()}
    for mac in dv.mac_devices():
        same = by_chip[mac.chip]
        assert (mac.mem_gbps, mac.gpu_tflops, mac.tier) == (same.mem_gbps, same.gpu_tflops,
                                                            same.tier)
        assert mac.ssd_gbps > 0


def test_chip_choice(monkeypatch):
    monkeypatch.setattr(catalog, "this_mac_chip", lambda: "M2 Pro")
    assert catalog_device(16 * dv.GB).chip == "M2 Pro (19-core GPU)"  # this Mac's chip first
    monkeypatch.setattr(catalog, "this_mac_chip", lambda: None)
    assert catalog_device(48 * dv.GB).name == "Mac mini M4 Pro"
    d = catalog_device(48 * dv.GB, "m4 pro (16-core gpu)")
    assert d.chip == "M4 Pro (16-core GPU)" and d.ssd_gbps == 5.5  # the Mac mini M4 Pro's SSD
    assert "M1 Ultra (64-core GPU)" in catalog_markdown(128 * dv.GB, "M1 Ultra")
    for bad in ("M5", "M4 Pro (12-core GPU)", "M4 (x-core GPU)"):
        with pytest.raises(ConfigError):
            catalog_device(16 * dv.GB, bad)


def test_cli_catalog_chip(capsys):
    from app.cli import main

    assert main(["models", "catalog", "--ram-gb", "16", "--chip", "M1 Pro"]) == 0
    assert "M1 Pro (16-core GPU)" in capsys.readouterr().out
    assert main(["models", "catalog", "--chip", "M9"]) == 2
    assert "unknown chip 'M9'" in capsys.readouterr().err
