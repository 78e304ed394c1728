# -*- coding: utf-8 -*-
# Copyright: contributors to the mikopbx.marketplace collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fleet-wide decisions of the mikopbx_marketplace role: which company key, and does it have the seats.

Both filters read facts the role records on every host: ``_mikopbx_host_key`` (the key stored on the
PBX, in clear, only ever set by a task with ``no_log``), ``mikopbx_info`` (licence facts without the
key) and ``_mikopbx_eligible`` (the PBX answered and can reach the licensing hosts).
``mikopbx_choose_license_key`` returns a key in clear, so it must only be used in tasks with
``no_log: true``. The documentation of each filter is in the sidecar file ``<filter name>.yml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.mikopbx.marketplace.plugins.filter.mask import mask_license_key, normalize_license_key

HOST_LIMIT = 10


def _vars(hostvars: Any, host: str) -> Mapping[str, Any]:
    try:
        found = hostvars[host]
    except (KeyError, TypeError):
        return {}
    return found if isinstance(found, Mapping) else {}


def _get(host_vars: Mapping[str, Any], name: str, default: Any = None) -> Any:
    try:
        value = host_vars.get(name, default)
    except Exception:  # one host with a broken variable must not break the fleet decision
        return default
    return default if value is None else value


def _info(host_vars: Mapping[str, Any]) -> Mapping[str, Any]:
    info = _get(host_vars, "mikopbx_info", {})
    return info if isinstance(info, Mapping) and not info.get("failed") and not info.get("skipped") else {}


def _check_hosts(hosts: Any, name: str) -> list[str]:
    if isinstance(hosts, str) or not isinstance(hosts, (list, tuple)):
        raise AnsibleFilterError("%s: hosts must be a list of inventory host names" % name)
    return [str(h) for h in hosts]


def key_holders(hostvars: Any, hosts: list[str]) -> list[dict[str, Any]]:
    """Hosts whose PBX stores a licence key, with the key, its binding status and the seat figures."""
    found = []
    for host in hosts:
        host_vars = _vars(hostvars, host)
        key = normalize_license_key(_get(host_vars, "_mikopbx_host_key", ""))
        if not key:
            continue
        info = _info(host_vars)
        found.append(
            {
                "host": host,
                "key": key,
                "status": info.get("binding_status") or "unknown",
                "seats": info.get("seats") if isinstance(info.get("seats"), Mapping) else None,
            }
        )
    return found


def mikopbx_choose_license_key(hostvars: Any, hosts: list[str], given: Any = None) -> dict[str, Any]:
    """Decide the company key: the given one, else the one found on the fleet, else none.

    A key held with a seat (status ``ok``) wins over a key stored without one (``binding_required``,
    typically a backup restored onto new hardware). Two different keys at the same level is a
    conflict the operator must settle by giving the key.
    """
    hosts = _check_hosts(hosts, "mikopbx_choose_license_key")
    holders = key_holders(hostvars, hosts)
    given_key = normalize_license_key(given)

    if given_key:
        return _choice(given_key, "variable", [h["host"] for h in holders if h["key"] == given_key], [])

    for level in ("ok", "binding_required"):
        at_level = [h for h in holders if h["status"] == level]
        keys = sorted({h["key"] for h in at_level})
        if len(keys) == 1:
            return _choice(keys[0], "discovered", [h["host"] for h in at_level], [])
        if len(keys) > 1:
            conflicts = ["%s (%s)" % (h["host"], mask_license_key(h["key"])) for h in at_level]
            return _choice(
                "",
                "conflict",
                [],
                conflicts,
                "the PBXs hold different licence keys (%s); set mikopbx_license_key to the company key"
                % ", ".join(conflicts),
            )
    return _choice("", "none", [], [])


def _choice(key: str, source: str, found_on: list[str], conflicts: list[str], error: str | None = None) -> dict:
    return {
        "key": key,
        "license_key_masked": mask_license_key(key),
        "source": source,
        "found_on": found_on,
        "conflicts": conflicts,
        "error": error,
    }


def mikopbx_seat_plan(
    hostvars: Any,
    hosts: list[str],
    license_key: Any,
    seats_per_key: int = 10,
    replace_foreign_keys: bool = False,
) -> dict[str, Any]:
    """Which eligible hosts need a seat of ``license_key``, and does the key have that many free."""
    hosts = _check_hosts(hosts, "mikopbx_seat_plan")
    key = normalize_license_key(license_key)
    if not isinstance(seats_per_key, int) or isinstance(seats_per_key, bool) or seats_per_key < 1:
        raise AnsibleFilterError("mikopbx_seat_plan: seats_per_key must be a positive integer")

    holders, needs, foreign, figures = [], [], [], []
    for host in hosts:
        host_vars = _vars(hostvars, host)
        stored = normalize_license_key(_get(host_vars, "_mikopbx_host_key", ""))
        info = _info(host_vars)
        if stored and stored == key and info.get("binding_status") == "ok":
            holders.append(host)
            if isinstance(info.get("seats"), Mapping) and info["seats"].get("count") is not None:
                figures.append(info["seats"])
            continue
        if not _get(host_vars, "_mikopbx_eligible", False):
            continue
        if stored and stored != key and not replace_foreign_keys:
            foreign.append(host)
        else:
            needs.append(host)

    return _budget(key, holders, needs, foreign, figures, seats_per_key)


def _budget(
    key: str,
    holders: list[str],
    needs: list[str],
    foreign: list[str],
    figures: list[Mapping[str, Any]],
    seats_per_key: int,
) -> dict[str, Any]:
    known = bool(figures)
    if known:
        # Licence info is cached on each PBX for about two minutes: trust the busiest figure.
        first = figures[0]
        count = min(int(first.get("count") or 0), int(first.get("host_limit") or HOST_LIMIT))
        captured = max(int(f.get("captured") or 0) for f in figures)
    else:
        count, captured = min(seats_per_key, HOST_LIMIT), len(holders)
    free = max(count - captured, 0)
    fits = len(needs) <= free

    message = None
    if not fits:
        message = (
            "Seat budget exceeded, nothing was changed: key %s has %s seats, %s captured (%s free%s), "
            "but %s a seat: %s. PBXs of this play holding a seat: %s. Free seats in the licence cabinet "
            "(reset the bindings of machines that are gone), add seats to the key, or limit the play."
            % (
                mask_license_key(key) or "(none)",
                count,
                captured,
                free,
                "" if known else ", assumed: no PBX of this play could read the figures",
                "1 PBX needs" if len(needs) == 1 else "%d PBXs need" % len(needs),
                ", ".join(needs),
                ", ".join(holders) or "none",
            )
        )
    return {
        "license_key_masked": mask_license_key(key),
        "count": count,
        "captured": captured,
        "free": free,
        "known": known,
        "holders": holders,
        "needs": needs,
        "foreign": foreign,
        "fits": fits,
        "message": message,
    }


def mikopbx_replaced_hosts(hostvars: Any, hosts: list[str], migrations: Any = None) -> dict[str, list[str]]:
    """Old machine -> the hosts of the play that replace it.

    A host replaces the one its ``mikopbx_migrate_from`` names; ``migrations`` (new host: old host, as
    given to migrate.yml) adds pairs. Register and bind must leave an old machine alone: binding it
    again would undo the migration and take a seat.
    """
    hosts = _check_hosts(hosts, "mikopbx_replaced_hosts")
    if migrations is not None and not isinstance(migrations, Mapping):
        raise AnsibleFilterError("mikopbx_replaced_hosts: migrations must be a mapping of new host to old host")
    pairs = [(host, _get(_vars(hostvars, host), "mikopbx_migrate_from")) for host in hosts]
    pairs += list((migrations or {}).items())
    replaced: dict[str, list[str]] = {}
    for new, old in pairs:
        if isinstance(old, str) and old and old != new and new not in replaced.setdefault(old, []):
            replaced[old].append(new)
    return {old: sorted(news) for old, news in replaced.items()}


class FilterModule:
    """Fleet planning filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "mikopbx_choose_license_key": mikopbx_choose_license_key,
            "mikopbx_seat_plan": mikopbx_seat_plan,
            "mikopbx_replaced_hosts": mikopbx_replaced_hosts,
        }
