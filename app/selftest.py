"""`canopy app --self-test`: prove an installed (or bundled) Canopy works, without models.

Builds a tiny random model pair in a temporary folder, generates greedily in `tree` and `ar`
modes on the engine thread, and checks the token ids are identical.
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path


def self_test() -> int:
    from engine.config import GenerationConfig
    from engine.events import Failed, Finished
    from engine.runtime import EngineThread
    from engine.session import Session
    from engine.testing import make_tiny_model

    results: dict[str, object] = {}
    done = threading.Event()

    def on_event(job_id, event):
        if isinstance(event, (Finished, Failed)):
            results[job_id] = event

    with tempfile.TemporaryDirectory(prefix="canopy-selftest-") as tmp:
        target = make_tiny_model(Path(tmp) / "target", seed=1)
        draft = make_tiny_model(Path(tmp) / "draft", like=target, noise=0.1, seed=2)

        def job(mode):
            def run(should_stop):
                session = Session.load(target, draft)
                ids = session.encode_chat([{"role": "user", "content": "hello"}])
                yield from session.generate(
                    ids, GenerationConfig(mode=mode, max_tokens=40), should_stop
                )

            return run

        engine = EngineThread(on_event)
        tree_id, ar_id = engine.submit(job("tree")), engine.submit(job("ar"))
        engine.submit(lambda should_stop: _signal(done))  # runs after both: jobs are FIFO
        done.wait(120)
        engine.shutdown()
    tree, ar = results.get(tree_id), results.get(ar_id)
    for name, ev in (("tree", tree), ("ar", ar)):
        if not isinstance(ev, Finished):
            print(f"self-test FAILED: {name} mode: {getattr(ev, 'message', 'no result')}")
            return 1
    if tree.token_ids != ar.token_ids:
        print("self-test FAILED: tree output differs from ar")
        return 1
    print(
        f"self-test OK: tree == ar ({len(ar.token_ids)} tokens, "
        f"{tree.stats.tokens_per_pass:.2f} tokens per target pass)"
    )
    return 0


def _signal(done: threading.Event):
    done.set()
    yield from ()


if __name__ == "__main__":
    sys.exit(self_test())
