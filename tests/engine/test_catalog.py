"""The Mac pair catalog: consistent families, placements that follow RAM, compatible drafts."""

from engine.costmodel import devices as dv
from engine.costmodel.catalog import (
    catalog_markdown,
    closest_device,
    compatible_drafts,
    fit,
    load_catalog,
)


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
    table = catalog_markdown(16 * dv.GB)
    rows = [line for line in table.splitlines() if line.startswith("| mlx-community/")]
    assert "predicted, not measured" in table and len(rows) == 6
