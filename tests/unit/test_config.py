"""ctl.config: patroni.yml + PATRONI_* environment, and the one-line errors for bad input."""

from __future__ import annotations

import os

import pytest

from ctl import config
from ctl.errors import ConfigError, ExitCode, UsageError


def write(tmp_path, text: str, name: str = "patroni.yml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_etcd3_hosts_list_and_comma_string(tmp_path) -> None:
    c = config.load(write(tmp_path, "scope: demo\netcd3:\n  hosts: [10.0.0.1:2379, '10.0.0.2:2380']\n"), env={})
    assert c.scope == "demo" and c.namespace == "/service/"
    assert c.etcd.hosts == (("10.0.0.1", 2379), ("10.0.0.2", 2380))
    assert c.etcd.endpoints == ("http://10.0.0.1:2379", "http://10.0.0.2:2380")
    c = config.load(write(tmp_path, "etcd3:\n  hosts: 10.0.0.1:2379,10.0.0.2\n"), env={})
    assert c.etcd.hosts == (("10.0.0.1", 2379), ("10.0.0.2", 2379))


def test_etcd_section_is_v3_too_with_host_url_and_tls(tmp_path) -> None:
    c = config.load(write(tmp_path, "etcd:\n  host: h1:2381\n"), env={})
    assert c.etcd.hosts == (("h1", 2381),) and c.etcd.protocol == "http"
    c = config.load(write(tmp_path, "etcd3:\n  url: https://h2:2379\n  cacert: /ca.pem\n"
                                    "  username: u\n  password: p\n"), env={})
    assert c.etcd.protocol == "https" and c.etcd.cacert == "/ca.pem" and c.etcd.username == "u"
    assert "password='p'" not in repr(c.etcd)


def test_environment_overrides_the_file(tmp_path) -> None:
    path = write(tmp_path, "scope: file\nnamespace: /ns1/\netcd3:\n  hosts: [a:1]\nctl:\n  insecure: false\n")
    env = {"PATRONI_SCOPE": "envscope", "PATRONI_NAMESPACE": "/ns2/", "PATRONI_ETCD3_HOSTS": "'b:2','c:3'",
           "PATRONI_CTL_USERNAME": "admin", "PATRONI_CTL_PASSWORD": "pw", "PATRONI_CTL_INSECURE": "true"}
    c = config.load(path, env=env)
    assert (c.scope, c.namespace) == ("envscope", "/ns2/")
    assert c.etcd.hosts == (("b", 2), ("c", 3))
    assert c.ctl.username == "admin" and c.ctl.password == "pw" and c.ctl.insecure is True


def test_env_alone_without_a_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.config/patroni/patronictl.yaml
    c = config.load(None, env={"PATRONI_ETCD3_HOSTS": "127.0.0.1:2379", "PATRONI_SCOPE": "x"})
    assert c.scope == "x" and c.etcd.hosts == (("127.0.0.1", 2379),) and c.source == "environment"
    c = config.load(None, env={})
    assert c.etcd is None


def test_dcs_url_replaces_the_dcs_section_and_sets_namespace(tmp_path) -> None:
    path = write(tmp_path, "etcd3:\n  hosts: [a:1]\n  username: u\n")
    c = config.load(path, env={}, dcs_url="etcd3://127.0.0.1:2399/myns")
    assert c.etcd.hosts == (("127.0.0.1", 2399),) and c.etcd.username is None and c.namespace == "/myns"
    assert config.load(path, env={}, dcs_url="localhost").etcd.hosts == (("localhost", 2379),)
    with pytest.raises(UsageError, match="unknown dcs scheme: consul"):
        config.load(path, env={}, dcs_url="consul://h:8500")


def test_missing_and_unreadable_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as exc:
        config.load(str(tmp_path / "nope.yml"), env={})
    assert exc.value.exit_code == ExitCode.CONFIG
    path = write(tmp_path, "scope: x\n")
    os.chmod(path, 0)
    if os.access(path, os.R_OK):  # running as root: permissions do not apply
        pytest.skip("root can read any file")
    with pytest.raises(ConfigError, match="not readable"):
        config.load(path, env={})


def test_malformed_yaml_names_file_line_and_column(tmp_path) -> None:
    path = write(tmp_path, "scope: demo\netcd3:\n  hosts: [a:1\n  bad: : :\n")
    with pytest.raises(ConfigError) as exc:
        config.load(path, env={})
    msg = str(exc.value)
    assert msg.startswith(f"malformed YAML in {path}, line ") and "column" in msg and "\n" not in msg


@pytest.mark.parametrize("text,key", [
    ("scope: [a, b]\n", "scope"),
    ("etcd3: hosts\n", "etcd3"),
    ("etcd3:\n  hosts: {a: 1}\n", "etcd3.hosts"),
    ("ctl:\n  insecure: maybe\n", "ctl.insecure"),
    ("restapi:\n  authentication:\n    password: [s3cret]\n", "restapi.authentication.password"),
    ("etcd3:\n  hosts: [a:notaport]\n", "etcd3.hosts"),
])
def test_wrong_type_for_known_key(tmp_path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config.load(write(tmp_path, text), env={})
    assert key in str(exc.value)
    assert "s3cret" not in str(exc.value)


def test_top_level_must_be_a_mapping(tmp_path) -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        config.load(write(tmp_path, "- a\n- b\n"), env={})


def test_directory_of_yaml_files_is_merged(tmp_path) -> None:
    d = tmp_path / "conf.d"
    d.mkdir()
    (d / "10-base.yml").write_text("scope: a\netcd3:\n  hosts: [h:1]\n")
    (d / "20-override.yaml").write_text("scope: b\n")
    c = config.load(str(d), env={})
    assert c.scope == "b" and c.etcd.hosts == (("h", 1),)


def test_ipv6_hosts_are_bracketed_in_endpoint_urls(tmp_path) -> None:
    c = config.load(write(tmp_path, "etcd3:\n  hosts: ['[::1]:2379', 'h:2380']\n"), env={})
    assert c.etcd.hosts == (("::1", 2379), ("h", 2380))
    assert c.etcd.endpoints == ("http://[::1]:2379", "http://h:2380")
