"""Step records survive a restart; conversations export to Markdown/JSON and import back."""

import json
import zlib

import pytest

from app.cli import main
from app.export import ExportError, conversation_json, conversation_markdown, import_conversation
from app.history import HistoryStore
from app.step_records import decode_steps, encode_steps
from tests.app.fake_engine import ANSWER, script_for

STATS = {"time_to_first_token": 0.42, "tokens_per_second": 12.5, "tokens_per_pass": 2.25,
         "generated_tokens": 40, "mode": "tree", "prefill_cached_tokens": 30}


def filled_store(path):
    store = HistoryStore(path)
    cid = store.create_conversation("Trees", system_prompt="Be brief.")
    store.add_message(cid, "user", "What is speculative decoding?")
    mid = store.add_message(cid, "assistant", ANSWER)
    store.update_message(mid, ANSWER, stats=STATS, stop_reason="eos", finished=True)
    store.set_steps(mid, script_for(ANSWER))
    return store, cid, mid


def test_step_records_round_trip_compactly():
    steps = script_for(ANSWER)
    blob = encode_steps(steps)
    back = decode_steps(blob)
    assert len(back) == len(steps)
    for a, b in zip(steps, back):
        assert (a.tree_tokens, a.tree_parents, a.accepted, a.token_ids, a.text, a.from_draft) == (
            b.tree_tokens, b.tree_parents, b.accepted, b.token_ids, b.text, b.from_draft)
        assert (a.tree_depths, a.token_texts) == (b.tree_depths, b.token_texts)
        assert b.tree_probs == pytest.approx(a.tree_probs, rel=1e-3)
        assert b.tree_path_probs == pytest.approx(a.tree_path_probs, rel=1e-3)
        assert b.verify_seconds == pytest.approx(a.verify_seconds, abs=1e-6)
    assert len(blob) < len(repr(steps)) / 5
    assert decode_steps(b"") == []
    with pytest.raises(ValueError, match="unreadable"):
        decode_steps(b"not zlib")


def test_records_written_before_the_step_fields_existed_still_load():
    steps = script_for(ANSWER)[:3]
    doc = json.loads(zlib.decompress(encode_steps(steps)))
    for name in ("tree_depths", "tree_path_probs", "token_texts"):
        del doc["columns"][name]
    back = decode_steps(zlib.compress(json.dumps(doc).encode()))
    for a, b in zip(steps, back):
        assert b.tree_depths == a.tree_depths
        assert b.tree_path_probs == pytest.approx(a.tree_path_probs, rel=1e-3)
        assert "".join(b.token_texts) == a.text and len(b.token_texts) == len(a.token_ids)


def test_replay_after_reopening_the_database(tmp_path):
    store, cid, mid = filled_store(tmp_path / "h.sqlite3")
    store.close()
    again = HistoryStore(tmp_path / "h.sqlite3")
    steps = again.steps(mid)
    assert [s.accepted for s in steps] == [s.accepted for s in script_for(ANSWER)]
    assert "".join(s.text for s in steps) == ANSWER
    assert again.positions_with_steps(cid) == {1}
    assert again.messages(cid)[1].stats["time_to_first_token"] == 0.42


def test_old_database_gains_the_steps_column(tmp_path):
    import sqlite3

    from app.history import SCHEMA

    db = sqlite3.connect(tmp_path / "old.sqlite3")
    db.executescript(SCHEMA)  # the schema before step records
    db.execute("INSERT INTO conversations (title, created, updated) VALUES ('x', 0, 0)")
    db.commit()
    db.close()
    store = HistoryStore(tmp_path / "old.sqlite3")
    mid = store.add_message(1, "assistant", "hi")
    store.set_steps(mid, script_for("hi"))
    assert store.steps(mid)[0].text == "hi"


def test_window_replays_stored_steps_after_restart(qtbot, make_window, tmp_path):
    store, cid, _ = filled_store(tmp_path / "h2.sqlite3")
    store.close()
    window = make_window(history=tmp_path / "h2.sqlite3")
    window.open_conversation(cid)
    answer = window.chat.messages[1]
    assert answer.steps_button.isVisibleTo(answer)
    window.show_steps(1)
    assert window.tree.slider.maximum() == len(script_for(ANSWER)) - 1


def test_json_export_round_trip(tmp_path):
    store, cid, _ = filled_store(tmp_path / "a.sqlite3")
    doc = conversation_json(store, cid)
    assert doc["messages"][1]["stats"]["time_to_first_token"] == 0.42
    assert len(doc["messages"][1]["steps"]) == len(script_for(ANSWER))
    other = HistoryStore(tmp_path / "b.sqlite3")
    new_id = import_conversation(other, json.loads(json.dumps(doc)))
    again = conversation_json(other, new_id)
    doc.pop("exported"), again.pop("exported")
    assert again == doc
    with pytest.raises(ExportError, match="not a Canopy conversation"):
        import_conversation(other, {"messages": []})


def test_markdown_export(tmp_path):
    store, cid, _ = filled_store(tmp_path / "a.sqlite3")
    md = conversation_markdown(store, cid)
    assert md.startswith("# Trees\n") and "> System: Be brief." in md
    assert "## You\n\nWhat is speculative decoding?" in md
    assert ANSWER.strip() in md and "TTFT 0.42 s · 12.5 tok/s · 2.25 tokens/pass" in md


def test_cli_export(tmp_path, capsys):
    store, cid, _ = filled_store(tmp_path / "a.sqlite3")
    store.close()
    db = str(tmp_path / "a.sqlite3")
    assert main(["export", "--db", db, "--list"]) == 0
    assert f"{cid}\tTrees" in capsys.readouterr().out
    out = tmp_path / "c.json"
    assert main(["export", str(cid), "--db", db, "--format", "json", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["messages"][1]["stats"]["tokens_per_second"] == 12.5
    assert main(["export", str(cid), "--db", db]) == 0
    assert capsys.readouterr().out.startswith("# Trees")
    assert main(["export", "999", "--db", db]) == 2
    assert "no conversation with id 999" in capsys.readouterr().err


def test_export_to_file_by_suffix(tmp_path):
    from app.export import export_conversation

    store, cid, _ = filled_store(tmp_path / "a.sqlite3")
    conversation, messages = store.conversation(cid), store.messages(cid)
    export_conversation(tmp_path / "chat.json", conversation, messages, store)
    export_conversation(tmp_path / "chat.md", conversation, messages)
    doc = json.loads((tmp_path / "chat.json").read_text())
    assert doc["title"] == "Trees" and doc["messages"][1]["steps"]  # the store adds the steps
    assert (tmp_path / "chat.md").read_text().startswith("# Trees")
