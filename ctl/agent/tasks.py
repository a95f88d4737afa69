"""Requests from REST handlers to the loop thread (PostgreSQL is the loop thread's child, so it must act)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class TaskResult:
    ok: bool
    message: str


@dataclass
class Task:
    kind: str  # restart | reload | reinitialize
    params: Mapping[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)
    result: TaskResult | None = None
