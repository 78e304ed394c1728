"""Injectable faults (docs/design.md §2 "Faults")."""

from __future__ import annotations

from typing import Any

LICENSING_HOSTS = ["lic.miko.ru", "lic.mikopbx.com", "releases.mikopbx.com"]
LIB_HOST = "lic.mikopbx.com"  # the host the licence library talks to (reference §10)
RELEASES_HOST = "releases.mikopbx.com"

HOST_FAULTS = {"egress_blocked", "dns_failure", "tls_intercept"}
COUNT_FAULTS = {"worker_timeout", "db_locked", "queue_full", "rate_limit"}
KNOWN = HOST_FAULTS | COUNT_FAULTS | {"licensing_down", "licensing_slow", "licensing_5xx"}


class FaultError(ValueError):
    pass


def normalise(spec: dict[str, Any]) -> dict[str, Any]:
    name = spec.get("name")
    if name not in KNOWN:
        raise FaultError(f"unknown fault {name!r}; known: {sorted(KNOWN)}")
    f = dict(spec)
    if name in HOST_FAULTS:
        hosts = f.get("hosts") or LICENSING_HOSTS
        if isinstance(hosts, str):
            hosts = [hosts]
        f["hosts"] = [str(h).lower() for h in hosts]
    if name in COUNT_FAULTS:
        f["count"] = int(f.get("count", 1))
    if name == "licensing_slow":
        f["delay"] = float(f.get("delay", 5))
    return f


class Faults:
    """An ordered list of active faults.  Count faults are consumed one per matching API call;
    an optional ``match`` parameter (substring of the request path) narrows which calls they hit."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, spec: dict[str, Any]) -> dict[str, Any]:
        f = normalise(spec)
        self.items.append(f)
        return f

    def clear(self) -> None:
        self.items.clear()

    def get(self, name: str) -> dict[str, Any] | None:
        for f in self.items:
            if f["name"] == name and (name not in COUNT_FAULTS or f["count"] > 0):
                return f
        return None

    def for_host(self, name: str, host: str) -> dict[str, Any] | None:
        for f in self.items:
            if f["name"] == name and host.lower() in f["hosts"]:
                return f
        return None

    def consume(self, name: str, path: str) -> dict[str, Any] | None:
        for f in self.items:
            if f["name"] != name or f["count"] <= 0:
                continue
            if f.get("match") and str(f["match"]) not in path:
                continue
            f["count"] -= 1
            return f
        return None

    def public(self) -> list[dict[str, Any]]:
        return [dict(f) for f in self.items]


class FaultView:
    """A PBX's own faults first, then the fleet-wide ones."""

    def __init__(self, own: Faults, fleet: Faults) -> None:
        self.own = own
        self.fleet = fleet

    def get(self, name: str) -> dict[str, Any] | None:
        return self.own.get(name) or self.fleet.get(name)

    def for_host(self, name: str, host: str) -> dict[str, Any] | None:
        return self.own.for_host(name, host) or self.fleet.for_host(name, host)

    def consume(self, name: str, path: str) -> dict[str, Any] | None:
        return self.own.consume(name, path) or self.fleet.consume(name, path)

    def public(self) -> list[dict[str, Any]]:
        return self.own.public() + [dict(f, scope="fleet") for f in self.fleet.public()]
