"""The REST API's request and response objects, shared by the server (ctl/agent/api.py) and the route modules."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


class BadRequest(Exception):
    """Raised by `Request.json()`; the framework answers 400."""


@dataclass
class Request:
    method: str
    path: str  # without the query string
    query: Mapping[str, list[str]]
    headers: Any  # the request's email.message.Message: .get() is case-insensitive
    body: bytes = b""
    client_address: tuple[str, int] = ("", 0)
    peer_cert: Mapping[str, Any] | None = None
    data: Any = None  # the parsed JSON body when the route declared body="required"/"optional"
    body_read: bool = False

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        """The body parsed as JSON.

        Raises:
            BadRequest: the body is not valid JSON.
        """
        if self.data is not None:
            return self.data
        try:
            return json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(str(exc)) from None


@dataclass
class Response:
    status: int
    body: bytes | str | dict | list = b""
    content_type: str | None = None  # default: application/json for dict/list, text/html for text (as Patroni)
    headers: Mapping[str, str] = field(default_factory=dict)
    status_only: bool = False  # write only `HTTP/1.0 <code> <reason>` (HEAD/OPTIONS, /liveness, /readiness)
    error: bool = False  # answer with the stdlib error page (`send_error`), as Patroni does for 411/400/502

    def encode(self) -> tuple[bytes, str]:
        if isinstance(self.body, (dict, list)):
            return json.dumps(self.body, default=str).encode("utf-8"), self.content_type or "application/json"
        if isinstance(self.body, str):
            return self.body.encode("utf-8"), self.content_type or "text/html"
        return bytes(self.body), self.content_type or "text/html"


Handler = Callable[[Request], Response]
