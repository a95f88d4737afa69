"""The generated man pages lint clean, and the completion scripts complete for real in bash, fish and zsh (zpty),
including cluster and member names read from a real etcd through `hactl _complete`."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import time

import pytest

from tests.integration.test_views import seed, write_config
from tests.support.procs import in_ci, require_binary

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAN = os.path.join(REPO, "man")
COMPLETIONS = os.path.join(REPO, "completions")


def _tool(name: str, package: str) -> str:
    return require_binary(shutil.which(name), name, f"the Debian package {package} (scripts/install-deps.sh)")


def _pages() -> list[str]:
    return sorted(os.path.join(MAN, n) for n in os.listdir(MAN) if n.endswith(".1"))


# ------------------------------------------------------------------------------------------------ man


def test_man_pages_lint_clean_with_groff() -> None:
    groff = _tool("groff", "groff-base")
    for page in _pages():
        proc = subprocess.run([groff, "-ww", "-z", "-man", page], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and proc.stderr == "", f"{page}: {proc.stderr}"


def test_man_pages_lint_clean_with_mandoc() -> None:
    mandoc = _tool("mandoc", "mandoc")
    for page in _pages():
        proc = subprocess.run([mandoc, "-T", "lint", "-W", "style", page], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", f"{page}: {proc.stdout}{proc.stderr}"


def test_man_l_renders_without_warnings() -> None:
    man = _tool("man", "man-db")
    env = dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat", LC_ALL="C.UTF-8")
    proc = subprocess.run([man, "--warnings", "-l", os.path.join(MAN, "hactl.1")], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    text = proc.stdout
    for heading in ("NAME", "SYNOPSIS", "DESCRIPTION", "GLOBAL OPTIONS", "COMMANDS", "CONFIGURATION", "ENVIRONMENT",
                    "EXIT STATUS", "FILES", "EXAMPLES", "SEE ALSO"):
        assert f"\n{heading}\n" in text, heading
    assert "hactl switchover [OPTIONS] [CLUSTER_NAME]" in text


# ------------------------------------------------------------------------------------------------ completion

@pytest.fixture
def hactl_bin(tmp_path) -> dict[str, str]:
    """PATH with a `hactl` that runs this checkout (as the completion scripts call `hactl _complete`)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "hactl"
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m ctl \"$@\"\n")
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PATRONI", "PATRONICTL", "DCS_URL"))}
    env.update(PATH=f"{bindir}:{env.get('PATH', '/usr/bin:/bin')}", PYTHONPATH=REPO, HOME=str(tmp_path))
    return env


_BASH_HARNESS = r'''
source "$1"
complete -p hactl >/dev/null || exit 3
COMP_LINE="$2"
COMP_POINT=${#COMP_LINE}
read -ra COMP_WORDS <<<"$COMP_LINE"
COMP_CWORD=${#COMP_WORDS[@]}
if [[ $COMP_LINE =~ [[:space:]]$ ]]; then COMP_WORDS+=(""); else COMP_CWORD=$((COMP_CWORD - 1)); fi
_hactl hactl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
'''


def bash_complete(line: str, env: dict[str, str], cwd: str = REPO) -> list[str]:
    """What bash offers for TAB at the end of `line` (COMP_LINE/COMP_WORDS set as readline sets them)."""
    bash = _tool("bash", "bash")
    proc = subprocess.run([bash, "--norc", "--noprofile", "-c", _BASH_HARNESS, "harness",
                           os.path.join(COMPLETIONS, "hactl.bash"), line],
                          capture_output=True, text=True, timeout=30, env=env, cwd=cwd)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return [w for w in proc.stdout.splitlines() if w]


def fish_complete(line: str, env: dict[str, str]) -> list[str]:
    fish = _tool("fish", "fish")
    proc = subprocess.run([fish, "--no-config", "-c",
                           f"source {shlex.quote(os.path.join(COMPLETIONS, 'hactl.fish'))}; "
                           f"complete -C {shlex.quote(line)}"],
                          capture_output=True, text=True, timeout=30, env=env, cwd=REPO)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return [w.split("\t", 1)[0] for w in proc.stdout.splitlines() if w]


def test_bash_completes_commands_options_and_values(hactl_bin) -> None:
    assert bash_complete("hactl sw", hactl_bin) == ["switchover"]
    assert bash_complete("hactl demo ", hactl_bin) == ["up", "down"]
    assert "--format" in bash_complete("hactl list --", hactl_bin)
    assert bash_complete("hactl list -f ", hactl_bin) == ["pretty", "tsv", "json", "yaml", "yml"]
    assert bash_complete("hactl list --format=y", hactl_bin) == ["yaml", "yml"]
    assert bash_complete("hactl show-config -f ", hactl_bin) == ["json", "yaml"]
    assert bash_complete("hactl dsn --role st", hactl_bin) == ["standby-leader", "standby"]
    assert bash_complete("hactl --color a", hactl_bin) == ["auto", "always"]
    assert bash_complete("hactl --dcs-url etcd3://127.0.0.1:2379 --timeout 1 sh", hactl_bin) == ["show-config"]
    assert bash_complete("hactl -c completions/hactl.b", hactl_bin) == ["completions/hactl.bash"]


def test_bash_completes_cluster_and_member_names_from_etcd(etcd, namespace, tmp_path, hactl_bin) -> None:
    seed(etcd, namespace)
    seed(etcd, namespace, scope="other", dump="dcs_scheduled_switchover")
    config = write_config(tmp_path, namespace, [etcd.hostport])
    c = f"hactl -c {config}"
    assert bash_complete(f"{c} list ", hactl_bin) == ["demo", "other"]
    assert bash_complete(f"{c} version demo ", hactl_bin) == ["node1", "node2", "node3"]
    assert bash_complete(f"{c} version demo node1 node", hactl_bin) == ["node1", "node2", "node3"]
    assert bash_complete(f"{c} switchover demo --candidate node2", hactl_bin) == ["node2"]
    assert bash_complete(f"{c} dsn -m ", hactl_bin) == ["node1", "node2", "node3"]  # the configured scope
    assert bash_complete(f"{c} restart other ", hactl_bin) == bash_complete(f"{c} version other ", hactl_bin)
    assert bash_complete(f"{c} flush demo ", hactl_bin) == ["node1", "node2", "node3", "restart", "switchover"]
    # --dcs-url on the command line is passed on, as is the namespace of the file
    url = f"etcd3://{etcd.hostport}{namespace}"
    assert bash_complete(f"hactl --dcs-url {url} history ", hactl_bin) == ["demo", "other"]


def test_member_completion_is_quiet_and_bounded_when_etcd_does_not_answer(tmp_path, hactl_bin) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        config = write_config(tmp_path, "/service/", [f"127.0.0.1:{port}"])
        start = time.monotonic()
        assert bash_complete(f"hactl -c {config} version demo ", hactl_bin) == []
        assert time.monotonic() - start < 6
    assert bash_complete(f"hactl -c {tmp_path}/missing.yml list ", hactl_bin) == []


def test_fish_completes_commands_values_and_members(etcd, namespace, tmp_path, hactl_bin) -> None:
    assert fish_complete("hactl sw", hactl_bin) == ["switchover"]
    assert sorted(fish_complete("hactl show-config -f ", hactl_bin)) == ["json", "yaml"]
    assert sorted(fish_complete("hactl demo ", hactl_bin)) == ["down", "up"]
    seed(etcd, namespace)
    config = write_config(tmp_path, namespace, [etcd.hostport])
    assert fish_complete(f"hactl -c {config} list ", hactl_bin) == ["demo"]
    assert fish_complete(f"hactl -c {config} version demo ", hactl_bin) == ["node1", "node2", "node3"]
    assert fish_complete(f"hactl -c {config} dsn --member ", hactl_bin) == ["node1", "node2", "node3"]
    assert sorted(fish_complete(f"hactl -c {config} flush demo node1 ", hactl_bin)) == [
        "node1", "node2", "node3", "restart", "switchover"]


def test_zsh_completion_loads_into_compinit(tmp_path, hactl_bin) -> None:
    zsh = _tool("zsh", "zsh")
    script = os.path.join(COMPLETIONS, "_hactl")
    assert subprocess.run([zsh, "-n", script], capture_output=True, timeout=30).returncode == 0
    fpath = tmp_path / "fpath"
    fpath.mkdir()
    shutil.copy(script, fpath / "_hactl")
    probe = (f"fpath=({shlex.quote(str(fpath))} $fpath); autoload -Uz compinit; compinit -u -d {tmp_path}/zcomp; "
             "print -r -- ${_comps[hactl]}; autoload -Uz +X _hactl && functions _hactl_cmd_list >/dev/null "
             "|| { _hactl 2>/dev/null; true }; whence -w _hactl")
    proc = subprocess.run([zsh, "-f", "-c", probe], capture_output=True, text=True, timeout=30, env=hactl_bin)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "_hactl"


# An interactive zsh in a pseudo-terminal (zsh/zpty) types the line and TAB; a compadd wrapper prints every match.
_ZSH_CAPTURE = r'''
zmodload zsh/zpty || exit 2
zpty z zsh -f -i
local line
() {
    zpty -w z "PROMPT= ; RPROMPT= ; unsetopt zle 2>/dev/null; setopt zle"
    zpty -w z "fpath=($1 \$fpath); autoload -Uz compinit; compinit -u -D"
    zpty -w z "zstyle ':completion:*' list-grouped false; zstyle ':completion:*' insert-tab false; zstyle ':completion:*' list-separator ''"
    zpty -w z 'compadd() { builtin compadd "$@"; local -a __hits; local __i; builtin compadd -O __hits "$@"; for __i in $__hits; do print -r -- "<M>$__i"; done }'
    zpty -w z 'print -r -- "<READY>"'
} $1
zpty -r z line '*<READY>*' || exit 3
zpty -r z line $'*\n' 
zpty -w -n z "$2"$'\t'
integer idle=0
while (( idle < 8 )); do  # until 2 s pass without output: `hactl _complete` may take a while on a busy host
    if zpty -r -t z line 2>/dev/null; then
        idle=0
        [[ $line == *'<M>'* ]] && print -r -- ${${line##*<M>}%%$'\r'*}
    else
        sleep 0.25
        (( idle++ ))
    fi
done
zpty -d z
'''


def zsh_complete(line: str, env: dict[str, str], fpath: str) -> list[str]:
    zsh = _tool("zsh", "zsh")
    proc = subprocess.run([zsh, "-f", "-c", _ZSH_CAPTURE, "capture", fpath, line], capture_output=True, text=True,
                          timeout=60, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return sorted({w for w in proc.stdout.splitlines() if w})


def test_zsh_completes_commands_values_and_members(etcd, namespace, tmp_path, hactl_bin) -> None:
    fpath = tmp_path / "fpath"
    fpath.mkdir()
    shutil.copy(os.path.join(COMPLETIONS, "_hactl"), fpath / "_hactl")
    assert zsh_complete("hactl sw", hactl_bin, str(fpath)) == ["switchover"]
    assert zsh_complete("hactl show-config --format=", hactl_bin, str(fpath)) == ["json", "yaml"]
    assert zsh_complete("hactl dsn -r st", hactl_bin, str(fpath)) == ["standby", "standby-leader"]
    seed(etcd, namespace)
    seed(etcd, namespace, scope="other", dump="dcs_scheduled_switchover")
    config = write_config(tmp_path, namespace, [etcd.hostport])
    assert zsh_complete(f"hactl -c {config} list ", hactl_bin, str(fpath)) == ["demo", "other"]
    assert zsh_complete(f"hactl -c {config} version demo ", hactl_bin, str(fpath)) == ["node1", "node2", "node3"]
    assert zsh_complete(f"hactl -c {config} dsn -m ", hactl_bin, str(fpath)) == ["node1", "node2", "node3"]
    assert zsh_complete(f"hactl -c {config} switchover demo --candidate ", hactl_bin,
                        str(fpath)) == ["node1", "node2", "node3"]
    assert zsh_complete(f"hactl -c {config} flush demo ", hactl_bin, str(fpath)) == [
        "node1", "node2", "node3", "restart", "switchover"]


def test_completion_tools_are_installed_under_ci() -> None:
    if not in_ci():
        pytest.skip("checks the CI image only")
    for tool in ("groff", "mandoc", "man", "bash", "fish", "zsh"):
        assert shutil.which(tool), f"{tool} is missing: scripts/install-deps.sh installs it"
