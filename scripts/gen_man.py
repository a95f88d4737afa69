#!/usr/bin/env python3
"""Generate man/hactl.1 and one man/hactl-<command>.1 per command from the hactl command tree.

    python scripts/gen_man.py [--out DIR]      # or: make man;  then: man -l man/hactl.1

Commands, options, defaults and the exit status table come from the code (the typer/click tree and
ctl.errors.ExitCode); NAME, DESCRIPTION, CONFIGURATION, EXAMPLES, FILES and SEE ALSO are written here.
tests/unit/test_docs_fresh.py fails when the committed pages differ from what this script writes.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys
import tokenize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from ctl import __version__  # noqa: E402
from ctl.cli.tree import CommandSpec, OptionSpec, command_tree  # noqa: E402
from ctl.errors import ExitCode  # noqa: E402

REGENERATE = "make man  (python scripts/gen_man.py)"
# The date in the page footer. Bump it when the hand-written sections change; it is fixed so that regenerating
# the pages gives identical files.
DATE = "2026-11-25"
MANUAL = "hactl manual"


# ------------------------------------------------------------------------------------------------------------ roff

def esc(text: str) -> str:
    """Escape text for roff: backslashes, hyphens (so options copy-paste as ASCII), and control characters at the
    start of a line."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = re.sub(r"^([.'])", r"\\&\1", text, flags=re.M)
    return text


def wrap(page: str, width: int = 78) -> str:
    """Break long text lines at blanks (roff fills them again); request lines and .EX blocks stay as they are."""
    import textwrap

    out, literal = [], False
    for line in page.splitlines():
        if line.startswith((".EX", ".nf")):
            literal = True
        elif line.startswith((".EE", ".fi")):
            literal = False
        if literal or line.startswith((".", "'")) or len(line.encode("utf-8")) <= width:
            out.append(line)
            continue
        for piece in textwrap.wrap(line, width=width, break_long_words=False, break_on_hyphens=False):
            out.append("\\&" + piece if piece.startswith((".", "'")) else piece)
    return "\n".join(out) + "\n"


def _inline(text: str) -> str:
    """Escape, then set `code` spans in bold (help texts use backticks for commands and literals)."""
    return re.sub(r"`([^`]+)`", r"\\fB\1\\fR", esc(text))


def _para(text: str) -> str:
    """Help text paragraphs (blank-line separated) as roff paragraphs, lines joined."""
    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    return "\n.PP\n".join(_inline(p) for p in paras) + "\n"


def _usage(cmd: CommandSpec) -> str:
    # typer prints an argument without an explicit metavar in lower case (`[cluster_name]`); the page does not.
    usage = re.sub(r"\b[a-z]+(?:_[a-z]+)+\b", lambda m: m.group(0).upper(), cmd.usage)
    usage = re.sub(r"\{([A-Z_]+)\}", r"\1", usage)  # typer's {REQUIRED}: a man page shows it bare
    parts = []
    for token in usage.split():
        if token == "[OPTIONS]":
            parts.append("[\\fIOPTIONS\\fR]")
        else:
            parts.append(re.sub(r"([A-Z][A-Z_]+)", r"\\fI\1\\fR", esc(token)))
    return f".B {esc(cmd.name)}\n" + " ".join(parts) + "\n"


def _option(opt: OptionSpec) -> str:
    names = sorted(opt.names, key=lambda n: (n.startswith("--"), n))
    spelled = ", ".join(f"\\fB{esc(n)}\\fR" for n in names)
    if opt.secondary:
        spelled += " / " + ", ".join(f"\\fB{esc(n)}\\fR" for n in opt.secondary)
    if opt.metavar:
        spelled += f" \\fI{esc(opt.metavar)}\\fR"
    extras = []
    if opt.value is not None and opt.value.kind == "choice" and opt.metavar and not opt.metavar.isupper():
        pass
    if opt.default is not None:
        extras.append(f"Default: {opt.default}.")
    if opt.envvar:
        extras.append(f"Environment: {opt.envvar}.")
    if opt.required:
        extras.append("Required.")
    text = (opt.help.strip() or "").rstrip()
    if text and not text.endswith("."):
        text += "."
    body = " ".join([text] + extras).strip()
    return f".TP\n{spelled}\n{_inline(body) if body else ''}\n".replace("\n\n", "\n")


def _options(cmd: CommandSpec) -> str:
    return "".join(_option(o) for o in cmd.options)


def _arguments(cmd: CommandSpec) -> str:
    if not cmd.arguments:
        return ""
    out = []
    kinds = {"clusters": "a cluster name (default: the configured scope)", "members": "a member name",
             "file": "a file", "dir": "a directory"}
    for arg in cmd.arguments:
        what = kinds.get(arg.value.kind, "a value")
        if arg.value.kind == "choice":
            what = "one of " + ", ".join(arg.value.choices)
        elif arg.required and arg.value.kind == "clusters":
            what = "a cluster name"
        note = "; repeatable" if arg.variadic else ""
        if arg.value.kind != "choice" and arg.value.choices:
            note += "; then " + " or ".join(arg.value.choices)
        note += "; required" if arg.required else ""
        out.append(f".TP\n\\fI{esc(arg.metavar)}\\fR\n{esc(what + note)}.\n")
    return "".join(out)


def _exit_codes() -> list[tuple[int, str, str]]:
    """(code, NAME, meaning) for every ExitCode member.

    The meaning is the README's exit-code table row (tests/unit/test_readme.py keeps that table complete), else
    the comment on the member's line in ctl/errors.py.
    """
    import ctl.errors

    with open(ctl.errors.__file__, encoding="utf-8") as fh:
        source = fh.read()
    comments: dict[str, str] = {}
    line_names: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.string in ExitCode.__members__ and tok.start[1] == 4:
            line_names[tok.start[0]] = tok.string
        elif tok.type == tokenize.COMMENT and tok.start[0] in line_names:
            comments[line_names[tok.start[0]]] = tok.string.lstrip("# ").strip()
    readme: dict[int, str] = {}
    try:
        with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
            section = fh.read().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
        readme = {int(m.group(1)): m.group(2).strip() for m in re.finditer(r"^\| (\d+) \| (.+?) \|$", section, re.M)}
    except (OSError, IndexError):
        pass
    return [(int(c), c.name, readme.get(int(c)) or comments.get(c.name, c.name.replace("_", " ").lower()))
            for c in ExitCode]


# ------------------------------------------------------------------------------------------------------------ text

NAME = "hactl \\- PostgreSQL high availability the Patroni way: a patronictl\\-compatible CLI and a node agent"

DESCRIPTION = r""".B hactl
is a drop\-in replacement for Patroni's
.BR patronictl .
It reads the same
.I patroni.yml
and the same etcd keys, and talks to the same REST API, so it manages a real Patroni 4.x cluster as well as a
cluster of hactl's own agents.
.B hactl agent
is the node agent: it runs PostgreSQL as primary or replica, holds the leader lock in etcd and serves a
Patroni\-compatible REST API.
.PP
Read\-only views print the cluster the way patronictl does (\fB\-f json\fR and \fB\-f yaml\fR give machine
output without colour); commands that change the cluster ask before they act unless \fB\-\-force\fR is given,
verify the outcome, and exit non\-zero when it did not happen.
Every failure is one line \fBError:\fR \fImessage\fR on standard error and an exit status from the table below.
Colour is used only on a terminal, never with \fBNO_COLOR\fR set, and as \fB\-\-color\fR says.
"""

CONFIGURATION = r""".B hactl
reads the configuration file given by \fB\-c\fR, else \fBPATRONICTL_CONFIG_FILE\fR, else
\fI~/.config/patroni/patronictl.yaml\fR (which may be missing).
A directory of \fI*.yml\fR/\fI*.yaml\fR files is merged in name order.
Without a file, \fBPATRONI_CONFIGURATION\fR (the whole YAML document) or the \fBPATRONI_*\fR variables alone are used.
The keys the CLI reads:
.TP
.B scope
The default cluster name.
.TP
.B namespace
The key prefix in etcd; default \fI/service/\fR.
.TP
\fBetcd3:\fR or \fBetcd:\fR
Both mean etcd v3: \fBhost\fR, \fBhosts\fR (a list or a comma\-separated string), \fBurl\fR, \fBprotocol\fR,
\fBusername\fR, \fBpassword\fR, \fBcacert\fR, \fBcert\fR, \fBkey\fR.
\fB\-\-dcs\-url\fR replaces this section.
.TP
.B ctl:
\fBauthentication\fR (\fBusername\fR, \fBpassword\fR) for the members' REST APIs, \fBinsecure\fR, \fBcacert\fR,
\fBcertfile\fR, \fBkeyfile\fR.
.TP
.B restapi:
The fallback for REST credentials and the CA when \fBctl:\fR has none.
.TP
.B postgresql.authentication.superuser
Used by \fBquery\fR.
.PP
The agent reads the whole file (\fBname\fR, \fBrestapi\fR, \fBpostgresql\fR, \fBbootstrap\fR, \fBtags\fR);
see \fIdocs/agent.md\fR in the source tree.
.PP
\fBsynchronous_mode\fR (dynamic configuration): \fBoff\fR (default) acknowledges a commit once it is on the
primary, so a crash of the primary can lose the last acknowledged commits. \fBon\fR makes every commit wait for a
synchronous standby's flush, and only that standby (listed in the \fBsync\fR key) may be promoted: no
acknowledged commit is lost, at the cost of one standby round trip per commit; without a standby the primary falls
back to asynchronous, unless \fBsynchronous_mode_strict\fR is true, where commits wait instead.
A commit whose synchronous wait was cancelled (\fBstatement_timeout\fR, \fBpg_cancel_backend\fR) is reported
with a WARNING and is not protected. \fBquorum\fR is not implemented by the agent yet.
TLS settings come from the configuration only, never from \fBSSL_CERT_FILE\fR or \fBREQUESTS_CA_BUNDLE\fR;
without a \fBcacert\fR the system store is used.
Passwords never appear in output or error messages.
"""

EXAMPLES = r""".SS "Look at a cluster in a terminal"
.EX
$ hactl \-c /etc/patroni/patroni.yml list   # patronictl's table
$ hactl list \-e \-t                         # with tags and a timestamp
$ hactl list \-W                            # redraw every 2 seconds until Ctrl\-C
$ hactl \-\-dcs\-url etcd3://10.0.0.5:2379 list demo \-f json
.EE
.SS "A scripted switchover in CI"
No prompts with \fB\-\-force\fR, JSON for the log, and the exit status decides:
.EX
set \-e
hactl \-c "$PATRONI_YML" switchover demo \e
      \-\-leader node1 \-\-candidate node2 \-\-force \-f json \-\-timeout 60
hactl \-c "$PATRONI_YML" list demo \-f json > cluster.json
.EE
.PP
Status 7 means the cluster refused (e.g. the candidate is not a healthy replica), 8 that the switchover was
accepted but the new leader did not show within \fB\-\-timeout\fR, 4 that etcd was not reachable.
.SS "Change the dynamic configuration"
.EX
$ EDITOR=vim hactl edit\-config demo         # edit, see the diff, confirm
$ hactl edit\-config demo \-\-pg max_connections=200 \-\-set loop_wait=5 \-\-force
$ hactl show\-config demo
.EE
.PP
The edit is validated (types, ranges, PostgreSQL GUCs) and written with a compare\-and\-set on the revision
that was read; a concurrent change is reported, never overwritten.
.SS "Before and after a change"
.EX
$ hactl plan switchover demo               # who would take over, and why not the others
$ hactl check demo \-\-strict                # exit 11 on findings, 4 when etcd is out of reach
$ hactl switchover demo \-\-candidate node2 \-\-force \-\-reason "CHG\-1234 kernel update"
$ hactl audit demo \-n 5                     # who changed what, when and why
$ hactl drill switchover demo \-\-force \-\-max\-gap 5   # rehearse under write load, keep a record
$ hactl list \-\-all \-f json                  # every cluster in the namespace, one document
.EE
"""

FILES = r""".TP
.I ~/.config/patroni/patronictl.yaml
The default configuration file.
.TP
.I /etc/patroni/patroni.yml
The usual place of the agents' (and Patroni's) configuration; pass it with \fB\-c\fR.
"""

SEE_ALSO = r""".BR patronictl (1),
.BR etcd (1),
.BR etcdctl (1),
.BR postgres (1),
.BR pg_ctl (1)
.PP
The README and \fIdocs/agent.md\fR in the hactl source tree.
"""


def _environment() -> str:
    rows = [
        ("PATRONICTL_CONFIG_FILE", "The configuration file, as \\fB\\-c\\fR."),
        ("DCS_URL", "As \\fB\\-\\-dcs\\-url\\fR."),
        ("PATRONI_CONFIGURATION", "The whole configuration as YAML, when there is no file."),
    ]
    try:  # the PATRONI_* variables the configuration loader reads
        from ctl import config_sources

        names = list(config_sources._SIMPLE_ENV)
        for prefix, (_section, keys) in config_sources._SECTION_KEYS.items():
            names.extend(f"PATRONI_{prefix}_{k}" for k in keys)
        names += ["PATRONI_ETCD3_HOSTS", "PATRONI_ETCD_HOSTS", "PATRONI_CTL_USERNAME", "PATRONI_CTL_PASSWORD",
                  "PATRONI_RESTAPI_USERNAME", "PATRONI_RESTAPI_PASSWORD"]
    except Exception:  # noqa: BLE001 - the page still lists the main variables
        names = []
    if names:
        rows.append(("PATRONI_*", "Override the file as in Patroni: " + ", ".join(sorted(set(names))) + "."))
    rows += [
        ("NO_COLOR", "Set to anything: no colour (unless \\fB\\-\\-color always\\fR)."),
        ("TERM", "\\fBdumb\\fR: no colour."),
        ("VISUAL, EDITOR", "The editor of \\fBedit\\-config\\fR (else \\fBeditor\\fR, else \\fBvi\\fR)."),
        ("PGPASSWORD", "The password \\fBquery\\fR uses when the configuration has none."),
        ("HACTL_DEBUG", "Set to anything: a traceback for an unexpected internal error."),
        ("HACTL_DEMO_DIR", "Where \\fBdemo up\\fR puts configs, data and logs."),
    ]
    out = []
    for name, text in rows:
        body = text if "\\f" in text else esc(text)
        if name == "PATRONI_*":
            body = esc(text)
        out.append(f".TP\n.B {esc(name)}\n{body}\n")
    return "".join(out)


def _exit_status() -> str:
    out = []
    for code, name, meaning in _exit_codes():
        out.append(f".TP\n.B {code}\n{_inline(meaning)}.\n")
    return "".join(out)


def _header(title: str, section_name: str) -> str:
    return (f".\\\" Generated by scripts/gen_man.py from the hactl command tree; do not edit.\n"
            f".\\\" Regenerate with: {REGENERATE}\n"
            f".TH {title.upper()} 1 {DATE} \"hactl {__version__}\" \"{MANUAL}\"\n"
            ".nh\n.ad l\n"  # no hyphenation, ragged right: option names and URLs stay whole
            f".SH NAME\n{section_name}\n")


def main_page(tree: CommandSpec) -> str:
    """man/hactl.1: everything on one page."""
    leaves = [c for c in tree.walk()[1:]]
    out = [_header("hactl", NAME), ".SH SYNOPSIS\n", _usage(tree)]
    for cmd in leaves:
        if not cmd.commands:
            out.append(".br\n" + _usage(cmd))
    out += [".SH DESCRIPTION\n", DESCRIPTION, ".SH GLOBAL OPTIONS\n",
            "These come before the command.\n", _options(tree), ".SH COMMANDS\n"]
    for cmd in leaves:
        out.append(f".SS \"{esc(' '.join(cmd.path))}\"\n")
        out.append(_usage(cmd) + ".PP\n" if not cmd.commands else "")
        out.append(_para(cmd.help or cmd.short_help))
        if cmd.arguments:
            out.append(".PP\nArguments:\n.RS\n" + _arguments(cmd) + ".RE\n")
        opts = [o for o in cmd.options if "--help" not in o.names]
        if opts:
            out.append(".PP\nOptions:\n.RS\n" + "".join(_option(o) for o in opts) + ".RE\n")
        if cmd.commands:
            out.append(".PP\nCommands: " + ", ".join(f"\\fB{esc(' '.join(c.path))}\\fR" for c in cmd.commands)
                       + ".\n")
    out += [".SH CONFIGURATION\n", CONFIGURATION, ".SH ENVIRONMENT\n", _environment(),
            ".SH EXIT STATUS\n", _exit_status(), ".SH FILES\n", FILES, ".SH EXAMPLES\n", EXAMPLES,
            ".SH SEE ALSO\n", ".BR hactl\\-<command> (1)\nfor each command,\n", SEE_ALSO]
    return "".join(out)


def command_page(cmd: CommandSpec) -> str:
    """man/hactl-<command>.1: one command (with its subcommands), its options, and pointers to hactl(1)."""
    title = "hactl-" + "-".join(cmd.path)
    out = [_header(title, f"{esc(title)} \\- {_inline(cmd.short_help)}"), ".SH SYNOPSIS\n"]
    subs = [c for c in cmd.walk() if not c.commands]
    out.append(".br\n".join(_usage(c) for c in subs))
    out += [".SH DESCRIPTION\n", _para(cmd.help or cmd.short_help)]
    for c in subs:
        if c is not cmd:
            out.append(f".SS \"{esc(' '.join(c.path))}\"\n" + _para(c.help or c.short_help))
        if c.arguments:
            out.append(".SH ARGUMENTS\n" if c is cmd else ".PP\nArguments:\n.RS\n")
            out.append(_arguments(c) + ("" if c is cmd else ".RE\n"))
        opts = [o for o in c.options if "--help" not in o.names]
        if opts:
            out.append(".SH OPTIONS\n" if c is cmd else ".PP\nOptions:\n.RS\n")
            out.append("".join(_option(o) for o in opts) + ("" if c is cmd else ".RE\n"))
    out += [".PP\nThe global options (\\fB\\-c\\fR, \\fB\\-\\-dcs\\-url\\fR, \\fB\\-\\-timeout\\fR, "
            "\\fB\\-\\-color\\fR, ...) come before the command; see\n.BR hactl (1).\n",
            ".SH EXIT STATUS\n0 on success; otherwise one line \\fBError:\\fR \\fImessage\\fR on standard error "
            "and a status from the table in\n.BR hactl (1).\n",
            ".SH SEE ALSO\n.BR hactl (1)\n"]
    return "".join(out)


def render_all(tree: CommandSpec | None = None) -> dict[str, str]:
    """File name -> content for hactl.1 and every hactl-<command>.1."""
    tree = tree or command_tree()
    pages = {"hactl.1": main_page(tree)}
    for cmd in tree.commands:
        pages[f"hactl-{cmd.path[0]}.1"] = command_page(cmd)
    return {name: wrap(text) for name, text in pages.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "man"), help="output directory")
    ns = parser.parse_args(argv)
    os.makedirs(ns.out, exist_ok=True)
    pages = render_all()
    for name in sorted(os.listdir(ns.out)):  # a removed command's page goes too
        if name.startswith("hactl") and name.endswith(".1") and name not in pages:
            os.remove(os.path.join(ns.out, name))
    for name, text in pages.items():
        with open(os.path.join(ns.out, name), "w", encoding="utf-8") as fh:
            fh.write(text)
        print(os.path.join(ns.out, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
