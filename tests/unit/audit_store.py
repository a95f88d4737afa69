"""An in-memory audit subtree for the unit tests' fake DCS classes (the protocol boundary, not our classes)."""

from __future__ import annotations

from ctl.dcs.codec import KeyValue

MARK = "/hactl/audit/"


class AuditStore:
    """Mix into a fake DCS: keys under `/hactl/audit/` go to `self.audit_kv`, never into the fake's own records."""

    def audit_put(self, key: str, value: str) -> bool:
        if MARK not in key:
            return False
        self.__dict__.setdefault("audit_kv", {})[key] = value
        return True

    @property
    def audit_entries(self) -> dict[str, str]:
        return self.__dict__.setdefault("audit_kv", {})

    def count_prefix(self, prefix: str) -> int:
        return sum(1 for k in self.audit_entries if k.startswith(prefix))

    def first_keys(self, prefix: str, limit: int) -> list[str]:
        return sorted(k for k in self.audit_entries if k.startswith(prefix))[:limit]

    def delete_range(self, start: str, end: str) -> int:
        gone = [k for k in self.audit_entries if start <= k < end]
        for k in gone:
            del self.audit_entries[k]
        return len(gone)

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        return [KeyValue(k, v, 1, None) for k, v in sorted(self.audit_entries.items()) if k.startswith(prefix)], 1
