"""`canopy soak`: formats engine.bench.soak's records for a terminal or as one JSON object."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict


def run_soak_cli(args) -> int:
    from app.cli import budget_bytes, checked, resolve_pair, stream_config
    from engine.bench.soak import SoakReport, SoakRun, SoakSample, format_table, run_soak
    from engine.config import SoakConfig

    config = checked(SoakConfig, args.generations, args.max_tokens)
    stream, budget = checked(stream_config, args), checked(budget_bytes, args)
    target, draft = resolve_pair(args, "tree")
    report = None
    for record in run_soak(target, draft, config, budget, stream):
        if isinstance(record, SoakReport):
            report = record
        elif isinstance(record, SoakSample):  # progress on stderr, also with --json
            p = record.process
            print(f"[{record.label} after {record.generations}: RSS {p.rss_bytes / 2**20:.0f} MB, "
                  f"fds {p.open_fds}, threads {p.threads}]", file=sys.stderr, flush=True)
        elif isinstance(record, SoakRun) and record.reason == "failed":
            print(f"generation {record.index} failed: {record.error}", file=sys.stderr)
    if args.json:
        print(json.dumps(asdict(report)))
    else:
        print(format_table(report))
    ok = report.failures == 0 and report.greedy_mismatches == 0
    return 0 if ok else 1
