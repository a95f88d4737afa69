"""Real Patroni 4.1.5 etcd dumps (tests/fixtures/patroni-4.1.5/) as codec KeyValues, for unit and integration tests."""

from __future__ import annotations

import base64
import json
import os
import re

from ctl.dcs.codec import KeyValue

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "patroni-4.1.5")
DUMPS = ("dcs_layout", "dcs_paused", "dcs_scheduled_restart", "dcs_scheduled_switchover", "dcs_sync_mode")


def fixture_path(name: str) -> str:
    return os.path.join(FIXTURES, name)


def observed_stdout(name: str) -> str:
    """The stdout section of a captured patronictl run (`list.txt` ...)."""
    with open(fixture_path(name), encoding="utf-8") as f:
        text = f.read()
    body = text.split("# ---- stdout ----\n", 1)[1]
    return body.split("# ---- stderr ----", 1)[0]


def load_dump(name: str) -> tuple[list[KeyValue], int]:
    """The `# plain:` section of a dcs_*.txt dump, with mod_revision and lease from its decoded section."""
    with open(fixture_path(name + ".txt"), encoding="utf-8") as f:
        text = f.read()
    revision = int(re.search(r'"revision": (\d+)', text).group(1))
    meta = {m.group(1): json.loads(m.group(2)) for m in re.finditer(r"^==== (\S+)\s+(\{.*\})$", text, re.M)}
    plain = text.split("# plain:", 1)[1].split("\n", 1)[1].split("\n# leases", 1)[0]
    lines = [ln for ln in plain.splitlines() if ln.strip()]
    kvs = []
    for key, value in zip(lines[0::2], lines[1::2]):
        m = meta.get(key, {})
        kvs.append(KeyValue(key=key, value=value, mod_revision=m.get("mod_revision", 0), lease=m.get("lease"),
                            create_revision=m.get("create_revision", 0)))
    return kvs, revision


def load_range_json() -> dict:
    """dcs_get_prefix.json: a real `kv/range` response from the etcd gateway (base64 keys and values)."""
    with open(fixture_path("dcs_get_prefix.json"), encoding="utf-8") as f:
        return json.load(f)


def decoded_range_json() -> list[tuple[str, str]]:
    body = load_range_json()
    return [(base64.b64decode(kv["key"]).decode(), base64.b64decode(kv["value"]).decode()) for kv in body["kvs"]]
