"""Benchmark (not a test): GUI event-loop latency while the engine generates at full speed.

A 10 ms QTimer probe records how late each tick fires while the main window streams an answer
from the demo pair (or --target/--draft). Goal: p99 < 50 ms.

    CANOPY_HOME=... python -m tests.app.bench_event_loop [--budget-mb 350] [--max-tokens 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--target")
    p.add_argument("--draft")
    p.add_argument("--budget-mb", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=200)
    p.add_argument("--mode", default="tree")
    p.add_argument("--prompt", default="Write a short story about a lighthouse keeper.")
    args = p.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QElapsedTimer, QSettings, QTimer

    from app.gui import create_app, create_window
    from app.model_choice import demo_paths

    target, draft = args.target, args.draft
    if target is None:
        target, draft = (str(x) for x in demo_paths())
    app = create_app()
    tmp = tempfile.TemporaryDirectory()
    qs = QSettings(str(Path(tmp.name) / "s.ini"), QSettings.Format.IniFormat)
    window = create_window(history_path=Path(tmp.name) / "h.sqlite3", qsettings=qs)
    s = window.settings
    s.target, s.draft, s.budget_mb = target, draft or "", args.budget_mb
    s.mode, s.max_tokens = args.mode, args.max_tokens
    window.apply_settings(s)
    window.resize(1600, 1000)
    window.show()
    lateness: list[float] = []
    clock = QElapsedTimer()
    probe = QTimer(interval=10)

    def tick():
        if window.bridge.generating:
            lateness.append(max(0.0, clock.restart() - 10.0))
        else:
            clock.restart()

    probe.timeout.connect(tick)
    result = {}

    def done(event):
        result["event"] = event
        app.quit()

    window.bridge.sig_load_finished.connect(lambda *_: (clock.start(), probe.start(),
                                                        window.send(args.prompt)))
    window.bridge.sig_generation_finished.connect(done)
    window.bridge.sig_generation_aborted.connect(done)
    window.bridge.sig_failed.connect(lambda c, m: (print(m, file=sys.stderr), app.quit()))
    t0 = time.perf_counter()
    window.load_models()
    app.exec()
    window.bridge.shutdown()
    if not lateness or "event" not in result:
        return 1
    lateness.sort()
    stats = result["event"].stats
    p = lambda q: lateness[min(len(lateness) - 1, int(q * len(lateness)))]  # noqa: E731
    print(f"{len(lateness)} probe ticks over {time.perf_counter() - t0:.1f} s; "
          f"{stats.generated_tokens} tokens at {stats.tokens_per_second:.1f} tok/s, "
          f"{stats.tokens_per_pass:.2f} tokens/pass")
    print(f"timer lateness ms: median {statistics.median(lateness):.1f}, p90 {p(0.9):.1f}, "
          f"p99 {p(0.99):.1f}, max {lateness[-1]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
