from app.bridge import EngineBridge
from engine.config import GenerationConfig
from engine.errors import ModelError
from tests.app.fake_engine import script_for


def _loaded(qtbot, loader):
    bridge = EngineBridge(loader)
    with qtbot.waitSignal(bridge.sig_load_finished, timeout=5000) as blocker:
        bridge.load("t", "d")
    assert blocker.args == ["fake-target + fake-draft", 2048, 30]
    return bridge


def test_load_progress_then_finished(qtbot, fake_loader):
    bridge = EngineBridge(fake_loader)
    try:
        with qtbot.waitSignals(
            [bridge.sig_load_progress, bridge.sig_load_progress, bridge.sig_load_progress,
             bridge.sig_load_finished], order="strict", timeout=5000):
            bridge.load("t", "d", budget_bytes=123)
        assert fake_loader.calls == [("t", "d", 123)]
        assert bridge.has_session
    finally:
        bridge.shutdown()


def test_generation_signal_order(qtbot, fake_loader):
    bridge = _loaded(qtbot, fake_loader)
    try:
        n = len(script_for(fake_loader.session.text))
        steps = []
        bridge.sig_step.connect(lambda step, t: steps.append(step))
        expected = [bridge.sig_generation_started, bridge.sig_prefill_done]
        expected += [bridge.sig_step] * n + [bridge.sig_generation_finished]
        with qtbot.waitSignals(expected, order="strict", timeout=5000):
            bridge.chat([{"role": "user", "content": "hi"}], GenerationConfig(), system="be brief")
        assert [s.index for s in steps] == list(range(n))
        assert "".join(s.text for s in steps) == fake_loader.session.text
        assert fake_loader.session.requests[0][1] == "be brief"
        qtbot.waitUntil(lambda: not bridge.busy, timeout=2000)
    finally:
        bridge.shutdown()


def test_stop_aborts_cooperatively(qtbot, fake_loader):
    fake_loader.session.delay = 0.02
    bridge = _loaded(qtbot, fake_loader)
    try:
        aborted = []
        bridge.sig_generation_aborted.connect(aborted.append)
        with qtbot.waitSignals([bridge.sig_generation_started, bridge.sig_step], order="strict",
                               timeout=5000):
            bridge.chat([{"role": "user", "content": "hi"}], GenerationConfig())
        with qtbot.waitSignal(bridge.sig_generation_aborted, timeout=5000):
            bridge.stop("generate")
        assert aborted[0].reason == "cancelled"
        assert len(aborted[0].text) < len(fake_loader.session.text)
        qtbot.waitUntil(lambda: not bridge.busy, timeout=2000)
        # the engine is still usable afterwards
        fake_loader.session.delay = 0.0
        with qtbot.waitSignal(bridge.sig_generation_finished, timeout=5000):
            bridge.chat([{"role": "user", "content": "again"}], GenerationConfig())
    finally:
        bridge.shutdown()


def test_stop_before_start_still_aborts(qtbot, fake_loader):
    fake_loader.session.delay = 0.02
    bridge = _loaded(qtbot, fake_loader)
    try:
        bridge.chat([{"role": "user", "content": "one"}], GenerationConfig())
        second = bridge.chat([{"role": "user", "content": "two"}], GenerationConfig())
        with qtbot.waitSignals([bridge.sig_generation_aborted, bridge.sig_generation_aborted],
                               timeout=5000):
            bridge.stop()
        qtbot.waitUntil(lambda: not bridge.busy, timeout=2000)
        assert second > 0
    finally:
        bridge.shutdown()


def test_failures_are_messages(qtbot, fake_loader):
    fake_loader.fail = ModelError("Model folder not found: /nope.")
    bridge = EngineBridge(fake_loader)
    try:
        with qtbot.waitSignal(bridge.sig_failed, timeout=5000) as blocker:
            bridge.load("/nope", None)
        assert blocker.args == ["load", "Model folder not found: /nope."]
        with qtbot.waitSignal(bridge.sig_failed, timeout=5000) as blocker:
            bridge.chat([{"role": "user", "content": "hi"}], GenerationConfig())
        assert blocker.args[0] == "generate" and "No model is loaded" in blocker.args[1]
    finally:
        bridge.shutdown()


def test_frames_are_coalesced(qtbot, fake_loader):
    fake_loader.session.text = "word " * 400  # hundreds of steps, produced as fast as possible
    bridge = _loaded(qtbot, fake_loader)
    try:
        frames, steps = [], []
        bridge.sig_frame.connect(lambda: frames.append(1))
        bridge.sig_step.connect(lambda s, t: steps.append(s))
        with qtbot.waitSignal(bridge.sig_generation_finished, timeout=10000):
            bridge.chat([{"role": "user", "content": "hi"}], GenerationConfig())
        assert len(steps) > 100
        assert len(frames) < len(steps) / 4
    finally:
        bridge.shutdown()


def test_cancel_loading(qtbot):
    import time

    from engine.events import LoadProgress

    def slow_loader(target, draft, *, budget_bytes=None, progress=None):
        for i in range(200):
            progress(LoadProgress("target layers", i, 200))
            time.sleep(0.01)
        raise AssertionError("not cancelled")

    bridge = EngineBridge(slow_loader)
    try:
        with qtbot.waitSignal(bridge.sig_load_progress, timeout=5000):
            bridge.load("t", "d")
        with qtbot.waitSignal(bridge.sig_load_aborted, timeout=5000):
            bridge.stop("load")
        qtbot.waitUntil(lambda: not bridge.busy, timeout=2000)
        assert not bridge.has_session
    finally:
        bridge.shutdown()


def _io_threads():
    import threading

    return {t for t in threading.enumerate() if t.name == "canopy-io" and t.is_alive()}


def test_reload_closes_the_old_streamed_session(qtbot, tiny_pair):
    """Bug 4: a reload used to drop the old session without close(): its IO thread and
    prefetched layers lived on outside the new budget."""
    from engine.config import StreamConfig
    from engine.streaming import weights as W

    index = W.index_model(tiny_pair["target"])
    budget = sum(t.length for t in index.other) + index.layer_bytes(0) + 1
    before = _io_threads()
    bridge = EngineBridge(stream=StreamConfig(prefetch=1))
    try:
        with qtbot.waitSignal(bridge.sig_load_finished, timeout=60000):
            bridge.load(str(tiny_pair["target"]), str(tiny_pair["noisy"]), budget)
        first = _io_threads() - before
        assert len(first) == 1
        old_reader = bridge._session.target.model.store.io_thread  # a job on a parked thread
        with qtbot.waitSignal(bridge.sig_load_finished, timeout=60000):
            bridge.load(str(tiny_pair["target"]), str(tiny_pair["noisy"]), budget)
        qtbot.waitUntil(lambda: not bridge.busy, timeout=5000)
        assert not old_reader.is_alive()  # the old store's reader is gone (its thread reused)
        assert len(_io_threads() - before) == 1  # only the new one runs
    finally:
        bridge.shutdown()
    assert not (_io_threads() - before)  # shutdown closes the last session too


def test_load_cancelled_before_it_starts_still_closes_the_old_session(qtbot):
    import threading

    from tests.app.fake_engine import FakeLoader, FakeSession

    class ClosableSession(FakeSession):
        closed = 0

        def close(self):
            self.closed += 1

    loader = FakeLoader()
    loader.session = first = ClosableSession()
    bridge = _loaded(qtbot, loader)
    try:
        gate = threading.Event()
        bridge.run_task(lambda report: gate.wait(5))  # holds the engine thread
        bridge.load("t2", "d2")
        with qtbot.waitSignal(bridge.sig_load_aborted, timeout=5000):
            bridge.stop("load")
            gate.set()
        qtbot.waitUntil(lambda: not bridge.busy, timeout=5000)
        assert first.closed == 1 and len(loader.calls) == 1
    finally:
        bridge.shutdown()
