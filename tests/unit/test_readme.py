"""The README's promises that code can check: the exit-code table and the two commands."""

from __future__ import annotations

import os
import re

from ctl.errors import ExitCode

README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "README.md")


def _readme() -> str:
    with open(README, encoding="utf-8") as f:
        return f.read()


def test_exit_code_table_lists_every_exit_code() -> None:
    section = _readme().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", section, re.M)}
    assert documented == {int(c) for c in ExitCode}


def test_the_two_commands_exist_in_the_makefile() -> None:
    text = _readme()
    assert "make demo" in text and "make test" in text
    with open(os.path.join(os.path.dirname(README), "Makefile"), encoding="utf-8") as f:
        makefile = f.read()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
