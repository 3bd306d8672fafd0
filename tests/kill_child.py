"""Child processes that tests/test_kill9.py kills with SIGKILL at a known moment.

`python -m tests.kill_child history DB TARGET DRAFT`: the engine and the history writer, as the
window uses them: two finished exchanges, then a third answer written as it streams; prints
`FINISHED <json>` after each finished answer and `PARTIAL <json>` once the third answer has been
saved a few times, then keeps generating (slowly) until killed.

`python -m tests.kill_child pull CACHE ENDPOINT`: `pull_model` from a fake Hub; once bytes of a
weight file arrive, prints `DOWNLOADING` and stalls that download until killed.

`python -m tests.kill_child demo HOME [STAGE]`: `canopy models demo --home HOME`; with STAGE
("target" or "draft") the weights of that model are half written, `WRITING <stage>` is printed
and the process waits to be killed.
"""

from __future__ import annotations

import json
import sys
import time


def history(db: str, target: str, draft: str) -> None:
    from app.history import HistoryStore
    from engine.config import GenerationConfig
    from engine.events import Finished, StepEvent
    from engine.session import Session

    store = HistoryStore(db)
    session = Session.load(target, draft)
    cid = store.create_conversation("kill -9")
    prompts = ["first question", "second question", "third question"]
    for n, prompt in enumerate(prompts):
        last = n == len(prompts) - 1
        store.add_message(cid, "user", prompt)
        mid = store.add_message(cid, "assistant", "", finished=False)
        config = GenerationConfig(mode="tree", max_tokens=1500 if last else 12)
        text, steps = "", 0
        for event in session.generate(session.encode(prompt), config):
            if isinstance(event, StepEvent):
                text += event.text
                steps += 1
                store.update_message(mid, text, sources=b"\x01" * len(text))
                if last and steps == 5:
                    print("PARTIAL " + json.dumps(text), flush=True)
                if last and steps >= 5:
                    time.sleep(0.05)  # mid-answer, slowly: the test kills us now
            elif isinstance(event, Finished):
                store.update_message(mid, event.text, stats=event.stats.to_dict(),
                                     stop_reason=event.reason, finished=True)
                print("FINISHED " + json.dumps([prompt, event.text]), flush=True)
    print("DONE", flush=True)  # the third answer ended before the kill: the test fails


def demo(home: str, stage: str | None) -> None:
    from engine.formats import demo as demo_mod
    from engine.formats import gguf

    real = gguf.save_model_dir

    def stalling(out, arrays, *a, **kw):
        what = "draft" if demo_mod.DRAFT_NAME in out.name else "target"
        if what != stage:
            return real(out, arrays, *a, **kw)
        real(out, arrays, *a, **kw)
        for f in out.glob("*.safetensors"):  # half of each weight file on disk, like mid-write
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        print(f"WRITING {stage}", flush=True)
        time.sleep(120)

    gguf.save_model_dir = demo_mod.save_model_dir = stalling
    target, draft = demo_mod.build_demo_pair(home)
    print(json.dumps({"target": str(target), "draft": str(draft)}), flush=True)


def pull(cache: str, endpoint: str) -> None:
    from engine.formats.hub import pull_model
    from tests.fake_hub import REPO

    def progress(event):
        if event.done > 0:
            print("DOWNLOADING", flush=True)
            time.sleep(120)  # mid-file: the worker thread holds the half-written blob

    pull_model(REPO, cache_dir=cache, endpoint=endpoint, progress=progress, max_workers=1)
    print("DONE", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "history":
        history(*sys.argv[2:5])
    elif sys.argv[1] == "pull":
        pull(*sys.argv[2:4])
    else:
        demo(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
