"""EngineThread: job ids on every event, one end notice per job (also when cancelled before it
started), progress reported from callbacks under the running job's id."""

from __future__ import annotations

import threading

from engine.events import Failed, LoadProgress
from engine.runtime import EngineThread


def test_job_ids_events_and_ends():
    log: list[tuple] = []
    done = threading.Event()
    gate = threading.Event()
    engine = EngineThread(lambda j, e: log.append(("event", j, e)),
                          lambda j: (log.append(("end", j)), j == 4 and done.set()))

    def blocked(should_stop):
        gate.wait(5)
        yield "first"

    def progress(should_stop):
        engine.report(LoadProgress("target", 0, 1))  # from a callback: tagged with this job
        yield "second"

    def broken(should_stop):
        raise ValueError("boom")
        yield

    try:
        ids = [engine.submit(blocked), engine.submit(progress), engine.submit(broken)]
        never = engine.submit(lambda s: iter(["never"]))
        engine.cancel(never)  # cancelled before it started: no events, still an end notice
        gate.set()
        assert done.wait(10)
    finally:
        engine.shutdown()
    a, b, c = ids
    assert ids + [never] == [1, 2, 3, 4]
    assert log[:5] == [("event", a, "first"), ("end", a),
                       ("event", b, LoadProgress("target", 0, 1)), ("event", b, "second"),
                       ("end", b)]
    assert log[5][:2] == ("event", c) and isinstance(log[5][2], Failed)
    assert "boom" in log[5][2].message
    assert log[6:] == [("end", c), ("end", never)]


def test_report_outside_a_job_is_refused():
    engine = EngineThread(lambda j, e: None)
    try:
        try:
            engine.report("x")
        except RuntimeError as exc:
            assert "running job" in str(exc)
        else:
            raise AssertionError("report outside a job must raise")
    finally:
        engine.shutdown()
