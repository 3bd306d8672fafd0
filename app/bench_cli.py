"""`canopy bench`: the side-by-side benchmark, the Apple Silicon table, the IO micro-benchmark.

The engine (engine/bench, engine/streaming/iobench) measures and returns figures; this module
parses nothing itself (app/cli.py does) and prints the results.
"""

from __future__ import annotations

import sys
from pathlib import Path

from app.cli import checked, resolve_pair, stream_config
from engine.config import BENCH_MAX_TOKENS


def run_bench_command(args) -> int:
    """`canopy bench`: the side-by-side benchmark, the Apple Silicon table or the IO bench."""
    import tempfile
    import time

    if args.devices:
        return run_devices_command(args)
    if args.io:
        return run_iobench_command(args)
    if args.speed:
        return run_speed_command(args)
    if args.draft_free:
        return run_draft_free_command(args)
    if args.pair == "coder":
        return run_coder_command(args)
    from engine.bench.pair import prepare_pair
    from engine.bench.report import write_outputs
    from engine.bench.run import BenchSpec, run_bench

    stream = checked(stream_config, args)
    spec = BenchSpec.quick_run() if args.quick else checked(BenchSpec.full_run, args.prompts,
                                                                            args.max_tokens)
    if not args.quick and args.target:
        resolve_pair(args)  # both folders checked before the long run starts
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="canopy-bench-") as tmp:
        pair = prepare_pair(args.target, args.draft, spec.quick, Path(tmp), report=say)
        result = run_bench(pair, spec, stream, report=say)
    result["total_seconds"] = time.perf_counter() - start
    paths = write_outputs(result, out)
    print(paths["markdown"].read_text())
    say(f"wrote {', '.join(str(p) for p in paths.values())} in {result['total_seconds']:.0f} s")
    return 0


def run_coder_command(args) -> int:
    """`canopy bench --pair coder`: engine.bench.coder's run; coder.json/.md/.png in --out."""
    import tempfile
    from dataclasses import replace

    from engine.bench.coder import run_coder_bench
    from engine.bench.coder_plan import CoderSpec
    from engine.bench.coder_report import write_coder_outputs
    from engine.bench.pair import prepare_coder_pair

    stream = checked(stream_config, args)
    spec = CoderSpec.quick_run() if args.quick else checked(CoderSpec)
    given = {"max_tokens": args.max_tokens, "max_rounds": args.prompts}
    if not args.quick:
        given |= {"minutes": args.minutes, "tree_nodes": args.tree_nodes}
    spec = checked(lambda: replace(spec, **{k: v for k, v in given.items() if v is not None}))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="canopy-bench-coder-") as tmp:
        pair = prepare_coder_pair(args.quick, Path(tmp))
        result = run_coder_bench(pair, spec, stream, Path(tmp) / "children", report=say,
                                 partial=out / "coder-partial.json")
    paths = write_coder_outputs(result, out)
    print(paths["markdown"].read_text())
    say(f"wrote {', '.join(str(p) for p in paths.values())} in "
        f"{result['total_seconds'] / 60:.1f} min")
    return 0


def run_devices_command(args) -> int:
    """`canopy bench --devices`: the Apple Silicon tables, or one pair on every chip (--json)."""
    import json

    from engine.costmodel import devices

    if not (args.target or args.draft or args.json):
        print(devices.device_table_markdown())
        return 0
    target = devices.load_shape(args.target or devices.QWEN_14B_NAME)
    draft = devices.load_shape(args.draft or devices.DEFAULT_DRAFT)
    if args.json:
        print(json.dumps({"target": target.name, "draft": draft.name,
                          "rows": devices.chip_rows(target, draft)}, indent=1))
    else:
        print(devices.chip_table_markdown(target, draft))
    return 0


def run_speed_command(args) -> int:
    """`canopy bench --speed`: engine.bench.speed's rows, as JSON and Markdown in --out."""
    import json
    import tempfile

    from engine.bench.pair import prepare_pair
    from engine.bench.speed import SpeedSpec, run_speed
    from engine.bench.speed_report import speed_markdown

    if args.repeats < 1:
        print("canopy: --repeats must be at least 1 (rounds of the resident rows).",
              file=sys.stderr)
        return 2
    if args.target:
        resolve_pair(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="canopy-speed-") as tmp:
        pair = prepare_pair(args.target, args.draft, args.quick, Path(tmp), report=say)
        spec = SpeedSpec(max_tokens=args.max_tokens or BENCH_MAX_TOKENS,
                         fresh_pairs=max(0, args.fresh_pairs), repeats=args.repeats)
        result = run_speed(pair, spec, report=say, folder=Path(tmp))
    (out / "speed.json").write_text(json.dumps(result, indent=1))
    markdown = speed_markdown(result)
    (out / "speed.md").write_text(markdown)
    print(markdown)
    return 0


def run_draft_free_command(args) -> int:
    """`canopy bench --draft-free`: engine.bench.draft_free's rows, as JSON and Markdown in
    --out (draft_free.json, draft_free.md). --quick: tiny models, one prompt per task."""
    import json
    import tempfile

    from engine.bench.draft_free import (
        DraftFreeSpec,
        draft_free_markdown,
        load_ar_ids,
        parse_budgets,
        run_draft_free,
    )
    from engine.bench.pair import prepare_pair

    kw = {"max_tokens": args.max_tokens} if args.max_tokens is not None else {}
    if args.quick:
        kw = {"max_tokens": args.max_tokens or 12, "prompts_per_task": 1}
    elif args.prompts is not None:
        kw["prompts_per_task"] = args.prompts
    if args.budgets is not None:
        kw["fractions"] = checked(parse_budgets, args.budgets)
    if args.modes is not None:
        kw["modes"] = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if args.ar_ids is not None:
        kw["ar_ids"] = checked(load_ar_ids, args.ar_ids)
    spec = checked(lambda: DraftFreeSpec(**kw))
    if not args.quick and args.target:
        resolve_pair(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "draft_free-partial.json"
    with tempfile.TemporaryDirectory(prefix="canopy-draft-free-") as tmp:
        pair = prepare_pair(args.target, args.draft, args.quick, Path(tmp), report=say,
                            bad_draft=False)
        result = run_draft_free(pair, spec, report=say,
                                partial=lambda r: partial.write_text(json.dumps(r, indent=1)))
    partial.unlink(missing_ok=True)
    (out / "draft_free.json").write_text(json.dumps(result, indent=1))
    markdown = draft_free_markdown(result)
    (out / "draft_free.md").write_text(markdown)
    print(markdown)
    return 0 if result["lossless"] else 1


def run_iobench_command(args) -> int:
    import tempfile

    import numpy as np

    from engine.streaming.iobench import run_iobench

    with tempfile.TemporaryDirectory(prefix="canopy-iobench-", dir=args.io_dir) as tmp:
        r = run_iobench(Path(tmp), mb=args.io_mb, layers=args.io_layers, repeat=args.io_repeat)
    kind = r["cold_read_kind"]
    cold = {"evicted": "cold (page cache dropped)",
            "fresh-file": "cold (fresh file, F_NOCACHE)"}[kind]
    for layout, res in r["layouts"].items():
        print(f"{layout} layout, {r['mb']} MB, {r['layers']} layers, "
              f"{res['reads_per_layer']:.0f} reads/layer")
        for name, by_kind in res["gbps"].items():
            for which, values in by_kind.items():
                label = cold if which == "cold" else "warm"
                print(f"  {name:11s} {label}: {np.median(values):5.2f} GB/s "
                      f"(min {min(values):.2f}, max {max(values):.2f})")
    print(f"read_tensors fixed cost per layer (9 tiny tensors, warm): "
          f"{r['read_fixed_seconds_per_layer'] * 1e6:.0f} us")
    p = r["pass_seconds_per_layer"]
    print(f"1-token pass per layer, tiny model: resident {p['resident'] * 1e6:.0f} us, streamed "
          f"{p['streamed'] * 1e6:.0f} us (overhead {(p['streamed'] - p['resident']) * 1e6:.0f} "
          "us/layer)")
    return 0


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
