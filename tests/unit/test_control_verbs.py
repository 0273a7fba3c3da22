"""The verb table is the one source of the verbs: `help`, the docs and the dispatcher."""

from __future__ import annotations

import re
from pathlib import Path

from sentinel.control.verbs import VERBS, Dispatcher, verbs_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "control-socket.md"


def _commands_section() -> str:
    return DOC.read_text().split("### Commands", 1)[1].split("\n### ", 1)[0]


def test_the_docs_verb_table_is_the_generated_one():
    section = _commands_section()
    block = section.split("-->\n", 1)[1].split("<!-- verbs: end -->", 1)[0]
    assert block == verbs_markdown(), "regenerate it with the command in the 'verbs: begin' comment"


def test_the_docs_reply_table_lists_every_verb_of_the_table_and_no_other():
    section = _commands_section().split("<!-- verbs: end -->", 1)[1]
    documented = re.findall(r"^\| `([a-z]+)[^`]*`", section, re.M)
    assert list(dict.fromkeys(documented)) == list(VERBS)


def test_a_verb_added_to_the_table_is_dispatched_and_listed_by_help(monkeypatch):
    """The table is the dispatcher's only source: one entry makes a working verb."""
    import dataclasses
    import json

    def ping(guardian, args, socket_info):
        return {"message": "pong " + " ".join(args)}

    monkeypatch.setitem(VERBS, "ping", dataclasses.replace(
        VERBS["help"], name="ping", usage="ping [WORD]", help="answer pong", max_args=1,
        handler=ping))
    d = Dispatcher(guardian=None)
    assert json.loads(d.handle(b"PING me").data) == {"ok": True, "command": "ping",
                                                     "message": "pong me"}
    listed = json.loads(d.handle(b"help").data)["commands"]
    assert {"name": "ping", "usage": "ping [WORD]", "help": "answer pong"} in listed
    assert "| `ping` | `ping [WORD]` | answer pong |" in verbs_markdown()
    bad = json.loads(d.handle(b"ping a b").data)["error"]
    assert bad == {"code": "bad_argument", "message": "usage: ping [WORD]"}
