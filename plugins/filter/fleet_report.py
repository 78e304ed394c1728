# -*- coding: utf-8 -*-
# Copyright: contributors to the mikopbx.marketplace collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that turn the per-PBX results of the mikopbx_marketplace role into one fleet report.

``mikopbx_fleet_report`` reads the facts the role records on every host (``mikopbx_info``,
``mikopbx_reachability``, ``mikopbx_registration``, ``mikopbx_binding``, ``mikopbx_modules``,
``mikopbx_skip_reason``, ``mikopbx_settings_problem``, ``mikopbx_fleet_errors``) and returns a structure for machines;
``mikopbx_report_markdown`` renders that structure for people. Neither ever returns a licence key
in clear: keys are taken from the modules' masked fields only, and every text is masked again on
the way out. The documentation of each filter is in the sidecar file ``<filter name>.yml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.mikopbx.marketplace.plugins.filter.mask import mask_license_keys_in_text

REPORT_FORMAT = 1

# Threshold name -> totals counter it is compared with. A threshold of None is never checked.
THRESHOLDS = {
    "unreachable": "licensing_unreachable",
    "api_unreachable": "api_unreachable",
    "unbound": "unbound",
    "licence_disabled_modules": "licence_disabled_modules",
    "required_modules": "required_module_problems",
    "expiring": "hosts_expiring",
    "errors": "hosts_with_errors",
}
DEFAULT_FAIL_ON = {
    "unreachable": 0,
    "api_unreachable": 0,
    "unbound": 0,
    "licence_disabled_modules": 0,
    "required_modules": 0,
    "expiring": None,
    "errors": 0,
}


def _unbound(record: Mapping[str, Any]) -> bool:
    """Not bound to the company key, and not an old machine that another host replaces."""
    return record["binding"]["status"] != "ok" and not record["replaced_by"]


# Which hosts to name for a threshold that is exceeded.
_OFFENDERS = {
    "unreachable": lambda h: h["reachability"]["reachable"] is False,
    "api_unreachable": lambda h: not h["api_ok"] and not h["settings_problem"],
    "unbound": _unbound,
    "licence_disabled_modules": lambda h: bool(h["modules"]["disabled"].get("licence")),
    "required_modules": lambda h: bool(h["modules"]["required_problems"]),
    "expiring": lambda h: bool(h["expiring"]),
    "errors": lambda h: bool(h["errors"]),
}
DISABLE_REASONS = ("licence", "user", "exception", "crash_loop", "other")
PHASES = (
    ("preflight", "mikopbx_info"),
    ("preflight", "mikopbx_reachability"),
    ("register", "mikopbx_registration"),
    ("bind", "mikopbx_binding"),
    ("modules", "mikopbx_modules"),
)


def _text(value: Any) -> str:
    return mask_license_keys_in_text("" if value is None else value)


def _result(value: Any) -> dict[str, Any]:
    """A registered result as a plain dict; skipped, undefined and non-dict values become ``{}``."""
    if not isinstance(value, Mapping) or value.get("skipped"):
        return {}
    return dict(value)


def _host_vars(hostvars: Any, host: str) -> Mapping[str, Any]:
    try:
        found = hostvars[host]
    except (KeyError, TypeError):
        return {}
    return found if isinstance(found, Mapping) else {}


def _lookup(host_vars: Mapping[str, Any], name: str) -> Any:
    try:
        return host_vars.get(name)
    except Exception:  # an undefined or broken variable of one host must not break the report
        return None


def _error_of(phase: str, result: Mapping[str, Any]) -> dict[str, Any]:
    error = result.get("error") if isinstance(result.get("error"), Mapping) else {}
    return {
        "phase": phase,
        "classification": error.get("classification"),
        "licence_code": error.get("licence_code"),
        "message": _text(result.get("msg") or error.get("message") or "failed"),
    }


def _reachability(result: Mapping[str, Any]) -> dict[str, Any]:
    if not result or result.get("failed"):
        return {"reachable": None, "method": None, "hosts": [], "license_ping": None, "first_failure": None}

    hosts = []
    for item in result.get("hosts") or []:
        hosts.append(
            {
                "host": item.get("host"),
                "ok": item.get("ok"),
                "failed_stage": item.get("failed_stage"),
                "intercepted": bool(item.get("intercepted")),
                "detail": _text(item.get("detail")),
            }
        )
    ping = result.get("license_ping") if isinstance(result.get("license_ping"), Mapping) else None
    return {
        "reachable": bool(result.get("reachable")),
        "method": result.get("method"),
        "hosts": hosts,
        "license_ping": {"ok": ping.get("ok"), "detail": _text(ping.get("detail"))} if ping else None,
        "first_failure": _first_failure(result.get("first_failure")),
    }


def _first_failure(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: (_text(v) if isinstance(v, str) else v) for k, v in value.items()}
    return _text(value) if value else None


def _name_of(item: Any) -> str:
    if isinstance(item, Mapping):
        return str(item.get("uniqid") or item.get("name") or item.get("module") or "?")
    return str(item)


def _modules(result: Mapping[str, Any]) -> dict[str, Any]:
    disabled: dict[str, list[str]] = {}
    rows = result.get("modules") or [] if result and not result.get("failed") else []
    for row in rows:
        if row.get("enabled", True):
            continue
        reason = row.get("disable_reason") or "other"
        disabled.setdefault(reason if reason in DISABLE_REASONS else "other", []).append(_name_of(row))

    return {
        "checked": bool(result) and not result.get("failed"),
        "total": len(rows),
        "enabled": sum(1 for row in rows if row.get("enabled", True)),
        "disabled": disabled,
        "required_problems": [_name_of(item) for item in result.get("required_problems") or []] if result else [],
        "remediation": result.get("remediation") if result else None,
    }


def _expiring(info: Mapping[str, Any], days: int) -> list[dict[str, Any]]:
    found = []
    for product in info.get("products") or []:
        left = product.get("expires_in_days")
        if product.get("expired_now") or (isinstance(left, int) and left <= days):
            found.append(
                {
                    "product": product.get("name"),
                    "expires_in_days": left,
                    "expired_now": bool(product.get("expired_now")),
                    "trial": bool(product.get("trial")),
                }
            )
    return found


def _manual_step_text(step: Any) -> str | None:
    """The cabinet step the binding module returns (a dict with ``instructions``) as one text."""
    if not step:
        return None
    if isinstance(step, Mapping):
        return _text(step.get("instructions") or step.get("page") or "see the licence cabinet")
    return _text(step)


def _binding(info: Mapping[str, Any], binding: Mapping[str, Any], api_ok: bool, fleet_key: str = "") -> dict[str, Any]:
    before = info.get("binding_status") if api_ok else "unknown"
    stored = _text(info.get("license_key_masked"))
    if api_ok and fleet_key and stored and stored != fleet_key:
        # The licence facts judge the key the PBX stores; measured against the company key it is a mismatch.
        before = "key_mismatch"
    status, changed, manual_step = before or "unknown", False, None
    seats = info.get("seats") if isinstance(info.get("seats"), Mapping) else None

    if binding:
        manual_step = binding.get("manual_step")
        if not binding.get("failed"):
            before = binding.get("binding_status") or before
            status = binding.get("binding_status_after") or status
            changed = bool(binding.get("changed"))
        if isinstance(binding.get("seats"), Mapping):
            seats = binding["seats"]

    return {
        "before": before or "unknown",
        "status": status,
        "changed": changed,
        "seats": dict(seats) if seats else None,
        "manual_step": _manual_step_text(manual_step),
    }


def _registration(registration: Mapping[str, Any], binding: Mapping[str, Any]) -> dict[str, Any]:
    """How the PBX came to the company key in this run: its own registration, else the binding's writes."""
    if registration.get("failed"):
        return {"action": "failed", "changed": False}
    action = registration.get("action") or "none"
    changed = bool(registration.get("changed"))
    if action == "none" and binding and not binding.get("failed"):
        actions = binding.get("actions") or []
        if "apply_key" in actions:
            action = "rebound_key" if "reset_key" in actions else "applied_key"
            changed = bool(binding.get("changed"))
    return {"action": action, "changed": changed}


def _key_after(info: Mapping[str, Any], binding: Mapping[str, Any]) -> str:
    if binding and not binding.get("failed") and "license_key_masked" in binding:
        return _text(binding.get("license_key_masked"))
    return _text(info.get("license_key_masked"))


def _fleet_seats(records: list[dict[str, Any]], key_masked: str) -> dict[str, Any] | None:
    """Seat figures of the company key: the most recent reading is the one with the most seats captured."""
    best = None
    for record in records:
        seats = record["binding"]["seats"]
        if not key_masked or record["license_key_masked"] != key_masked or not seats:
            continue
        if seats.get("count") is None:
            continue
        if best is None or (seats.get("captured") or 0) > (best.get("captured") or 0):
            best = seats
    if best is None:
        return None
    return {k: best.get(k) for k in ("count", "captured", "free", "host_limit") if k in best}


def _skip_reason(
    host_vars: Mapping[str, Any], key_masked: str, binding: Mapping[str, Any], fleet_key: str
) -> str | None:
    """Why the role left the PBX alone: the recorded reason, or a different key it was not allowed to replace."""
    reason = _text(_lookup(host_vars, "mikopbx_skip_reason"))
    if reason:
        return reason
    if fleet_key and key_masked and key_masked != fleet_key and not binding:
        return "stores a different licence key (%s); set mikopbx_replace_foreign_keys to move it to the company key" % (
            key_masked
        )
    return None


def host_record(
    name: str, host_vars: Mapping[str, Any], expiry_warning_days: int = 30, fleet_key_masked: str = ""
) -> dict[str, Any]:
    """Build the report entry of one PBX from the facts the role recorded on it."""
    results = {var: _result(_lookup(host_vars, var)) for _phase, var in PHASES}
    info = results["mikopbx_info"]
    registration = results["mikopbx_registration"]

    # A read that failed before any request because the inventory lacks a setting: the role's words
    # name the variable to set, where the raw failure is Ansible's or the option check's.
    settings_problem = _text(_lookup(host_vars, "mikopbx_settings_problem")) or None
    errors = [
        _error_of(phase, results[var])
        for phase, var in PHASES
        if results[var].get("failed") and not (settings_problem and var == "mikopbx_info")
    ]
    if settings_problem:
        errors.insert(
            0, {"phase": "settings", "classification": "settings", "licence_code": None, "message": settings_problem}
        )
    for extra in _lookup(host_vars, "mikopbx_fleet_errors") or []:
        if isinstance(extra, Mapping):
            errors.append({**extra, "message": _text(extra.get("message"))})

    ran = any(results.values())
    api_ok = bool(info) and not info.get("failed")
    changed = any(r.get("changed") for r in results.values() if not r.get("failed"))
    record = {
        "name": name,
        "url": _text(_lookup(host_vars, "mikopbx_url")),
        "ran": ran,
        "api_ok": api_ok,
        "settings_problem": settings_problem,
        # An old machine another host replaces: left unbound on purpose, so not counted as unbound.
        "replaced_by": _names(_lookup(host_vars, "mikopbx_replaced_by")),
        "generation": info.get("generation") or _lookup(host_vars, "mikopbx_generation"),
        "version": info.get("version"),
        "license_key_masked": _key_after(info, results["mikopbx_binding"]),
        "owner": (info.get("owner") or {}).get("companyname") if isinstance(info.get("owner"), Mapping) else None,
        "registration": _registration(registration, results["mikopbx_binding"]),
        "binding": _binding(info, results["mikopbx_binding"], api_ok, fleet_key_masked),
        "reachability": _reachability(results["mikopbx_reachability"]),
        "modules": _modules(results["mikopbx_modules"]),
        "expiring": _expiring(info, expiry_warning_days) if api_ok else [],
        "licence_error": _licence_error(info, results["mikopbx_binding"]),
        "skipped": _skip_reason(
            host_vars, _key_after(info, results["mikopbx_binding"]), results["mikopbx_binding"], fleet_key_masked
        ),
        "errors": errors,
        "changed": changed,
    }
    record["state"] = _state(record)
    return record


def _licence_error(info: Mapping[str, Any], binding: Mapping[str, Any]) -> Any:
    """The licence error read before any change, unless a bind of this run has since confirmed the seat
    (then the error, typically 2008 on a restored backup, is no longer true and would mislead)."""
    if binding.get("changed") and not binding.get("failed") and binding.get("binding_status_after") == "ok":
        return None
    return info.get("licence_error")


def _names(value: Any) -> list[str]:
    return [str(item) for item in value] if isinstance(value, (list, tuple)) else []


def _state(record: Mapping[str, Any]) -> str:
    if not record["ran"]:
        return "not_run"
    if record["errors"] or not record["api_ok"]:
        return "error"
    problems = (
        _unbound(record),
        record["reachability"]["reachable"] is False,
        bool(record["modules"]["disabled"].get("licence")),
        bool(record["modules"]["required_problems"]),
        bool(record["expiring"]),
    )
    return "warning" if any(problems) else "ok"


def _totals(hosts: list[dict[str, Any]]) -> dict[str, Any]:
    ran = [h for h in hosts if h["ran"]]
    generations: dict[str, int] = {}
    binding: dict[str, int] = {}
    for h in ran:
        generations[str(h["generation"] or "unknown")] = generations.get(str(h["generation"] or "unknown"), 0) + 1
        binding[h["binding"]["status"]] = binding.get(h["binding"]["status"], 0) + 1

    return {
        "hosts": len(hosts),
        "checked": len(ran),
        "not_run": len(hosts) - len(ran),
        "generations": generations,
        "binding_status": binding,
        "bound": binding.get("ok", 0),
        "unbound": sum(1 for h in ran if _unbound(h)),
        "replaced": sum(1 for h in ran if h["replaced_by"]),
        "api_unreachable": sum(1 for h in ran if not h["api_ok"] and not h["settings_problem"]),
        "settings_problems": sum(1 for h in ran if h["settings_problem"]),
        "licensing_unreachable": sum(1 for h in ran if h["reachability"]["reachable"] is False),
        "registered": sum(1 for h in ran if h["registration"]["action"] not in ("none", "failed")),
        "bindings_changed": sum(1 for h in ran if h["binding"]["changed"]),
        "changed": sum(1 for h in ran if h["changed"]),
        "licence_disabled_modules": sum(len(h["modules"]["disabled"].get("licence", [])) for h in ran),
        "hosts_with_licence_disabled_modules": sum(1 for h in ran if h["modules"]["disabled"].get("licence")),
        "required_module_problems": sum(len(h["modules"]["required_problems"]) for h in ran),
        "hosts_expiring": sum(1 for h in ran if h["expiring"]),
        "hosts_with_errors": sum(1 for h in ran if h["errors"]),
        "states": {s: sum(1 for h in hosts if h["state"] == s) for s in ("ok", "warning", "error", "not_run")},
    }


def _violations(
    hosts: list[dict[str, Any]], totals: Mapping[str, Any], fail_on: Mapping[str, Any]
) -> list[dict[str, Any]]:
    found = []
    for name, limit in fail_on.items():
        if limit is None:
            continue
        if name not in THRESHOLDS:
            raise AnsibleFilterError(
                "mikopbx_fleet_report: unknown threshold %r in fail_on (mikopbx_fail_on of the role); known: %s"
                % (name, ", ".join(THRESHOLDS))
            )
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise AnsibleFilterError("mikopbx_fleet_report: threshold %r must be a non-negative integer or null" % name)
        value = totals[THRESHOLDS[name]]
        if value > limit:
            offenders = [h["name"] for h in hosts if h["ran"] and _OFFENDERS[name](h)]
            found.append({"threshold": name, "value": value, "limit": limit, "hosts": offenders})
    return found


def mikopbx_fleet_report(
    hostvars: Any,
    hosts: list[str],
    fleet: Mapping[str, Any] | None = None,
    expiry_warning_days: int = 30,
    fail_on: Mapping[str, Any] | None = None,
    generated_at: str | None = None,
) -> dict[str, Any]:
    """Fleet report from ``hostvars`` for ``hosts`` (see ``mikopbx_fleet_report.yml``)."""
    if isinstance(hosts, str) or not isinstance(hosts, (list, tuple)):
        raise AnsibleFilterError("mikopbx_fleet_report: hosts must be a list of inventory host names")
    if not isinstance(expiry_warning_days, int) or isinstance(expiry_warning_days, bool):
        raise AnsibleFilterError("mikopbx_fleet_report: expiry_warning_days must be an integer")

    thresholds = dict(DEFAULT_FAIL_ON)
    thresholds.update(fail_on or {})
    fleet = dict(fleet or {})
    fleet_key = _text(fleet.get("license_key_masked"))
    records = [host_record(str(h), _host_vars(hostvars, str(h)), expiry_warning_days, fleet_key) for h in hosts]
    totals = _totals(records)

    return {
        "format": REPORT_FORMAT,
        "generated_at": generated_at,
        "expiry_warning_days": expiry_warning_days,
        "fleet": {
            "license_key_masked": _text(fleet.get("license_key_masked")),
            "key_source": fleet.get("key_source"),
            "registered_on": fleet.get("registered_on"),
            "seats": fleet.get("seats") or _fleet_seats(records, _text(fleet.get("license_key_masked"))),
            "check_mode": bool(fleet.get("check_mode")),
        },
        "totals": totals,
        "thresholds": thresholds,
        "violations": _violations(records, totals, thresholds),
        "hosts": records,
    }


def _cell(value: Any) -> str:
    text = _text(value).replace("\r", " ").replace("\n", " ").replace("|", "\\|").strip()
    return text or "-"


def _seats_text(seats: Any) -> str:
    if not isinstance(seats, Mapping) or seats.get("count") is None:
        return "-"
    return "%s/%s" % (seats.get("captured", "?"), seats.get("count"))


def _reach_text(reach: Mapping[str, Any]) -> str:
    if reach["reachable"] is None:
        return "not checked"
    parts = []
    for item in reach["hosts"]:
        if item["ok"]:
            parts.append("%s ok" % item["host"])
        else:
            stage = item["failed_stage"] or "?"
            parts.append("%s FAIL at %s%s" % (item["host"], stage, " (intercepted)" if item["intercepted"] else ""))
    ping = reach.get("license_ping")
    if ping is not None:
        parts.append("license:ping %s" % ("ok" if ping.get("ok") else "FAIL"))
    return "; ".join(parts) or ("ok" if reach["reachable"] else "FAIL")


def _modules_text(modules: Mapping[str, Any]) -> str:
    if not modules["checked"]:
        return "not checked"
    parts = ["%s: %s" % (reason, ", ".join(names)) for reason, names in sorted(modules["disabled"].items())]
    if modules["required_problems"]:
        parts.append("required missing/off: %s" % ", ".join(modules["required_problems"]))
    return "; ".join(parts) or "%s enabled" % modules["enabled"]


def _expiring_text(items: list[Mapping[str, Any]]) -> str:
    texts = []
    for item in items:
        if item["expired_now"]:
            texts.append("%s expired" % item["product"])
        else:
            texts.append("%s in %s d" % (item["product"], item["expires_in_days"]))
    return "; ".join(texts)


def _binding_text(binding: Mapping[str, Any]) -> str:
    if binding["changed"] or binding["before"] != binding["status"]:
        return "%s -> %s" % (binding["before"], binding["status"])
    return binding["status"]


def mikopbx_report_markdown(report: Mapping[str, Any]) -> str:
    """Render a report from ``mikopbx_fleet_report`` as a Markdown document."""
    if not isinstance(report, Mapping) or "hosts" not in report or "totals" not in report:
        raise AnsibleFilterError("mikopbx_report_markdown expects the output of mikopbx_fleet_report")

    totals, fleet = report["totals"], report["fleet"]
    gens = ", ".join("%s %s" % (n, g) for g, n in sorted(totals["generations"].items())) or "-"
    lines = [
        "# MikoPBX fleet report",
        "",
        "Generated: %s%s"
        % (report.get("generated_at") or "-", " (check mode: nothing was changed)" if fleet.get("check_mode") else ""),
        "Company key: %s (%s%s)"
        % (
            fleet.get("license_key_masked") or "none",
            fleet.get("key_source") or "unknown source",
            ", registered on %s" % fleet["registered_on"] if fleet.get("registered_on") else "",
        ),
        "Seats: %s" % _seats_text(fleet.get("seats")),
        "",
        "| PBXs | generations | bound | unbound | licensing unreachable | API unreachable | settings missing "
        "| licence-disabled modules | expiring <= %s d | with errors | changed |" % report["expiry_warning_days"],
        "|---|---|---|---|---|---|---|---|---|---|---|",
        "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |"
        % (
            totals["hosts"],
            gens,
            totals["bound"],
            totals["unbound"],
            totals["licensing_unreachable"],
            totals["api_unreachable"],
            totals.get("settings_problems", 0),
            totals["licence_disabled_modules"],
            totals["hosts_expiring"],
            totals["hosts_with_errors"],
            totals["changed"],
        ),
        "",
    ]

    if report["violations"]:
        lines.append("**Thresholds exceeded:**")
        lines.append("")
        for v in report["violations"]:
            lines.append("- %s: %s > %s (%s)" % (v["threshold"], v["value"], v["limit"], ", ".join(v["hosts"]) or "-"))
    else:
        lines.append("All thresholds met.")
    lines.append("")

    lines.append(
        "| PBX | state | gen | version | key | registration | binding | seats | licensing reachability "
        "| disabled modules | expiring | errors |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for h in report["hosts"]:
        notes = [e["message"] for e in h["errors"]]
        # The reason a PBX was left out often quotes its error; say it once.
        if h["skipped"] and not any(message and message in h["skipped"] for message in notes):
            notes.append("skipped: %s" % h["skipped"])
        if h["binding"]["manual_step"]:
            notes.append("manual step: %s" % h["binding"]["manual_step"])
        lines.append(
            "| "
            + " | ".join(
                _cell(c)
                for c in (
                    h["name"],
                    h["state"],
                    h["generation"],
                    h["version"],
                    h["license_key_masked"],
                    h["registration"]["action"],
                    _binding_text(h["binding"]),
                    _seats_text(h["binding"]["seats"]),
                    _reach_text(h["reachability"]),
                    _modules_text(h["modules"]),
                    _expiring_text(h["expiring"]),
                    " / ".join(notes),
                )
            )
            + " |"
        )
    lines.append("")
    return "\n".join(lines)


class FilterModule:
    """Fleet report filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "mikopbx_fleet_report": mikopbx_fleet_report,
            "mikopbx_report_markdown": mikopbx_report_markdown,
        }
