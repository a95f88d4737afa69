"""The README's commands run as written: the `hactl list` screenshot, and "Running on real hosts" as a real
three-member etcd cluster on 127.0.0.1 with the README's patroni.yml."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import urllib.request
from types import SimpleNamespace

import pytest
import yaml

from ctl import config as cfgmod
from ctl.agent import settings
from tests.integration.test_views import hactl, seed, write_config
from tests.support.procs import etcd_binary, free_port, require_binary, stop_process, wait_for

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _readme() -> str:
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as fh:
        return fh.read()


def _section(title: str) -> str:
    return _readme().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.M | re.S)


def test_the_list_screenshot_is_what_hactl_list_prints(etcd, namespace, tmp_path) -> None:
    shot = next(b for b in _blocks(_section("In 30 seconds"), "text") if b.startswith("$ hactl list\n"))
    seed(etcd, namespace)
    proc, _ = hactl("list", config=write_config(tmp_path, namespace, [etcd.hostport]))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == shot.split("\n", 1)[1]


# ------------------------------------------------------------------------------------------------ real hosts


def _member_command(template: list[str], i: int, ports: dict[int, tuple[int, int]], data: str) -> list[str]:
    """The README's e1 command as e<i> runs it ("the same with their own --name and address"), on 127.0.0.1."""
    own = ("--listen-client-urls", "--advertise-client-urls", "--listen-peer-urls", "--initial-advertise-peer-urls")
    out, prev = [], ""
    for tok in template:
        if prev == "--name":
            tok = f"e{i}"
        elif prev == "--data-dir":
            tok = os.path.join(data, f"e{i}")
        elif prev in own:
            tok = tok.replace("10.0.0.11", f"10.0.0.1{i}")
        out.append(tok)
        prev = tok if tok.startswith("--") else ""
    return [_localise(t, ports) for t in out]


def _localise(text: str, ports: dict[int, tuple[int, int]]) -> str:
    for j, (client, peer) in ports.items():
        text = text.replace(f"10.0.0.1{j}:2379", f"127.0.0.1:{client}").replace(f"10.0.0.1{j}:2380",
                                                                              f"127.0.0.1:{peer}")
    return text


def _healthy(client: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{client}/health", timeout=1) as r:
        return b'"health":"true"' in r.read().replace(b" ", b"")


def test_real_hosts_section_three_member_etcd_and_patroni_yml(tmp_path) -> None:
    etcd = require_binary(etcd_binary(), "etcd", "Debian etcd-server")
    etcdctl = require_binary(subprocess.run(["which", "etcdctl"], capture_output=True, text=True).stdout.strip(),
                             "etcdctl", "Debian etcd-client")
    section = _section("Running on real hosts with an external etcd cluster")
    sh = _blocks(section, "sh")[0]
    lines = [ln for ln in sh.replace("\\\n", " ").splitlines() if ln.strip() and not ln.startswith("#")]
    etcd_line = next(shlex.split(ln) for ln in lines if ln.startswith("etcd "))
    ctl_line = next(shlex.split(ln) for ln in lines if ln.startswith("etcdctl "))
    ports = {j: (free_port(), free_port()) for j in (1, 2, 3)}
    data = str(tmp_path / "etcd")
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        for i in (1, 2, 3):
            cmd = _member_command(etcd_line, i, ports, data)
            assert cmd[0] == "etcd"
            log = open(tmp_path / f"e{i}.log", "wb")
            logs.append(log)
            procs.append(subprocess.Popen([etcd] + cmd[1:], stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True))
        for _, (client, _) in ports.items():
            wait_for(lambda c=client: _healthy(c), timeout=30, what=f"etcd member on {client}")
        health = subprocess.run([etcdctl] + [_localise(t, ports) for t in ctl_line[1:]], capture_output=True,
                                text=True, timeout=30, env=dict(os.environ, ETCDCTL_API="3"))
        assert health.returncode == 0, health.stdout + health.stderr
        assert (health.stdout + health.stderr).count("is healthy") == 3

        # The README's patroni.yml, pointed at these three members, passes the agent's own validation.
        raw = yaml.safe_load(_blocks(section, "yaml")[0])
        raw["etcd3"]["hosts"] = [_localise(h, ports) for h in raw["etcd3"]["hosts"]]
        path = tmp_path / "patroni.yml"
        path.write_text(yaml.safe_dump(raw))
        config = cfgmod.load(str(path), {}, None)
        settings.validate(config)
        assert len(config.etcd.endpoints) == 3 and config.scope == "pg-main"

        seed(SimpleNamespace(client_port=ports[1][0]), "/service/", scope="pg-main")
        url = f"etcd3://127.0.0.1:{ports[1][0]}"
        proc, _ = hactl("--dcs-url", url, "list", "pg-main")
        assert proc.returncode == 0 and "pg-main" in proc.stdout, proc.stderr

        stop_process(procs[0])  # e1, the first endpoint of every patroni.yml, goes away
        proc, wall = hactl("list", config=str(path))
        assert proc.returncode == 0, proc.stderr
        assert "+ Cluster: pg-main" in proc.stdout and wall < 10
    finally:
        for p in procs:
            stop_process(p)
        for log in logs:
            log.close()
