# -*- coding: utf-8 -*-
# Copyright: contributors to the mikopbx.marketplace collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Installed extension modules of a MikoPBX: reading, disable-reason classification, checks.

Neither API generation lists installed modules. On 2026.1 the table ``m_PbxExtensionModules`` is
read with one constant ``SELECT`` through ``system:executeSqlRequest``; on 2024.1 the admin
cabinet's modules page is parsed. Both end up as the same module rows::

    {uniqid, name, version, enabled, disable_reason, disable_reason_raw, disable_reason_text,
     licence_problem}

``disable_reason`` is one of ``licence`` (the "crossed-out key": ``DisabledByLicense``), ``user``,
``exception``, ``crash_loop`` (2026.1 only) or None. MikoPBX does not clear the reason when a
module is enabled again, so a reason on an enabled module is stale: only a *disabled* module with
the licence reason is a licence problem.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from html.parser import HTMLParser
from typing import Any

from ansible_collections.mikopbx.marketplace.plugins.module_utils.errors import MikoPBXError

# The only statement mikopbx_module_check ever sends through system:executeSqlRequest.
MODULES_SQL = (
    "SELECT uniqid,name,version,disabled,disableReason,disableReasonText FROM m_PbxExtensionModules ORDER BY uniqid"
)
SQL_DATABASE = "main"
ADMIN_MODULES_PAGE = "/admin-cabinet/pbx-extension-modules/index"

REASON_LICENCE = "DisabledByLicense"
REASON_USER = "DisabledByUser"
REASON_EXCEPTION = "DisabledByException"
REASON_CRASH_LOOP = "DisabledByCrashLoop"

_REASONS = {
    REASON_LICENCE: "licence",
    REASON_USER: "user",
    REASON_EXCEPTION: "exception",
    REASON_CRASH_LOOP: "crash_loop",
}
DISABLE_REASONS = ("licence", "user", "exception", "crash_loop")
FAIL_ON_CHOICES = ("licence", "exception", "crash_loop", "required", "marketplace")


def _truthy_flag(value: Any) -> bool:
    """MikoPBX stores ``disabled`` as the string '0'/'1'; accept ints and bools too."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    return str(value).strip() not in ("", "0", "false", "False")


def classify_reason(disabled: bool, reason_raw: str | None) -> str | None:
    """Why a module is disabled, in the collection's vocabulary; None for an enabled module.

    2026.1 stores an empty reason when a user switches a module off (2024.1 stores
    ``DisabledByUser``), so a disabled module with no reason counts as disabled by the user.
    MikoPBX leaves the reason in place when a module is enabled again; such a stale reason is
    still returned raw (``disable_reason_raw``) but the module has no disable reason.
    """
    if not disabled:
        return None
    raw = (reason_raw or "").strip()
    if raw in _REASONS:
        return _REASONS[raw]
    if raw == "":
        return "user"
    # An unknown reason written by a newer MikoPBX: keep it visible rather than guessing.
    return "other"


def make_row(
    uniqid: str,
    name: str | None,
    version: str | None,
    enabled: bool,
    reason_raw: str | None,
    reason_text: str | None,
) -> dict[str, Any]:
    """One module row of the module result."""
    reason = classify_reason(not enabled, reason_raw)
    return {
        "uniqid": uniqid,
        "name": name or uniqid,
        "version": version or "",
        "enabled": enabled,
        "disable_reason": reason,
        "disable_reason_raw": reason_raw if reason_raw else None,
        "disable_reason_text": (reason_text or "").strip() or None,
        "licence_problem": (not enabled) and reason == "licence",
    }


def rows_from_sql(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Module rows from the ``data.rows`` of the constant SELECT (2026.1)."""
    modules = []
    for row in rows or []:
        if not isinstance(row, dict) or not row.get("uniqid"):
            continue
        modules.append(
            make_row(
                uniqid=str(row["uniqid"]),
                name=_text(row.get("name")),
                version=_text(row.get("version")),
                enabled=not _truthy_flag(row.get("disabled")),
                reason_raw=_text(row.get("disableReason")),
                reason_text=_text(row.get("disableReasonText")),
            )
        )
    return sorted(modules, key=lambda m: m["uniqid"])


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


# ---------------------------------------------------------------------------------------------
# 2024.1: the admin modules page

_VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _TextOnly(HTMLParser):
    """Plain text of a small HTML fragment (the tooltips carry markup such as <br> or <b>)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("br", "p", "div", "li"):
            self.parts.append(" ")


def html_to_text(fragment: str | None) -> str:
    if not fragment:
        return ""
    parser = _TextOnly()
    parser.feed(fragment)
    parser.close()
    return " ".join("".join(parser.parts).split())


class _Row:
    def __init__(self, uniqid: str, version: str) -> None:
        self.uniqid = uniqid
        self.version = version
        self.enabled = False
        self.name_parts: list[str] = []  # text of an element with class "module-name"
        self.cells: list[list[str]] = []  # text of each top-level cell
        self.has_dont = False
        self.has_key = False
        self.has_bug = False
        self.has_redo = False
        self.licence_text = ""
        self.exception_text = ""
        self.crash_text = ""


class ModulesPageParser(HTMLParser):
    """Collect the installed-module rows of ``/admin-cabinet/pbx-extension-modules/index``.

    The markers (both generations render the same template):

    * ``<tr class="module-row" data-id="{uniqid}" data-version="{version}">`` per module;
    * the enable toggle ``<input type="checkbox">`` is ``checked`` when the module is enabled;
    * an icon group ``red dont icon`` + ``key icon`` (the crossed-out key) when the module was
      disabled for licensing, with the reason text in a ``data-html`` attribute on the icon or on an
      element around it;
    * a red ``bug`` icon for ``DisabledByException``, a red ``redo`` icon for ``DisabledByCrashLoop``.

    The module name is the text of the element with class ``module-name`` when there is one, else
    the text of the first cell that has any; an untranslated name (``Breadcrumb{uniqid}``) is
    replaced by the id.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[_Row] = []
        self._row: _Row | None = None
        # Open elements inside the current row: (tag, data-html inherited from the nearest ancestor,
        # inside an element of class module-name).
        self._stack: list[tuple[str, str, bool]] = []

    # -- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _classes(attrs: dict[str, str | None]) -> set[str]:
        return set((attrs.get("class") or "").split())

    def _inherited_html(self, attrs: dict[str, str | None]) -> str:
        own = attrs.get("data-html") or attrs.get("data-content") or attrs.get("title")
        if own:
            return own
        return self._stack[-1][1] if self._stack else ""

    # -- parser callbacks ----------------------------------------------------------------------
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, dict(attrs))

    def _start(self, tag: str, attrs: dict[str, str | None]) -> None:
        classes = self._classes(attrs)

        if tag == "tr":
            self._close_row()
            if "module-row" in classes and attrs.get("data-id"):
                self._row = _Row(str(attrs["data-id"]).strip(), (attrs.get("data-version") or "").strip())
                self._stack = []
            return

        row = self._row
        if row is None:
            return

        if tag == "td" and not self._stack_has("td"):
            row.cells.append([])

        html = self._inherited_html(attrs)
        in_name = "module-name" in classes or bool(self._stack and self._stack[-1][2])
        self._mark(row, tag, attrs, classes, html)
        if tag not in _VOID_TAGS:
            self._stack.append((tag, html, in_name))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        row = self._row
        if row is None or tag == "tr":
            return
        values = dict(attrs)
        self._mark(row, tag, values, self._classes(values), self._inherited_html(values))

    def handle_endtag(self, tag: str) -> None:
        if self._row is None:
            return
        if tag in ("tr", "tbody", "table"):
            self._close_row()
            return
        # Pop up to the matching open element (tolerates unclosed inner tags).
        for index in range(len(self._stack) - 1, -1, -1):
            if self._stack[index][0] == tag:
                del self._stack[index:]
                break

    def handle_data(self, data: str) -> None:
        row = self._row
        if row is None or not self._stack:
            return
        if self._stack[-1][2]:
            row.name_parts.append(data)
        if row.cells and self._stack_has("td"):
            row.cells[-1].append(data)

    def close(self) -> None:
        super().close()
        self._close_row()

    # -- internals -----------------------------------------------------------------------------
    def _stack_has(self, tag: str) -> bool:
        return any(item[0] == tag for item in self._stack)

    def _close_row(self) -> None:
        if self._row is not None:
            self.rows.append(self._row)
        self._row = None
        self._stack = []

    @staticmethod
    def _mark(row: _Row, tag: str, attrs: dict[str, str | None], classes: set[str], html: str) -> None:
        if tag == "input" and (attrs.get("type") or "").lower() == "checkbox":
            row.enabled = "checked" in attrs
            return
        if "icon" not in classes:
            return
        if {"red", "dont"} <= classes:
            row.has_dont = True
            row.licence_text = row.licence_text or html
        elif "key" in classes:
            row.has_key = True
            row.licence_text = row.licence_text or html
        elif {"red", "bug"} <= classes:
            row.has_bug = True
            row.exception_text = row.exception_text or html
        elif {"red", "redo"} <= classes:
            row.has_redo = True
            row.crash_text = row.crash_text or html


def rows_from_admin_page(html: str) -> list[dict[str, Any]]:
    """Module rows parsed from the 2024.1 admin modules page.

    The page shows no raw ``disableReason``: ``disable_reason_raw`` is the reason constant implied
    by the icon (a disabled module without an icon is taken as ``DisabledByUser``).
    """
    parser = ModulesPageParser()
    parser.feed(html or "")
    parser.close()

    modules = []
    seen = set()
    for row in parser.rows:
        if row.uniqid in seen:
            continue
        seen.add(row.uniqid)
        if row.has_dont and row.has_key:
            raw, text = REASON_LICENCE, row.licence_text
        elif row.has_bug:
            raw, text = REASON_EXCEPTION, row.exception_text
        elif row.has_redo:
            raw, text = REASON_CRASH_LOOP, row.crash_text
        elif not row.enabled:
            raw, text = REASON_USER, ""
        else:
            raw, text = "", ""
        modules.append(make_row(row.uniqid, _row_name(row), row.version, row.enabled, raw, html_to_text(text)))
    return sorted(modules, key=lambda m: m["uniqid"])


def _row_name(row: _Row) -> str:
    name = " ".join("".join(row.name_parts).split())
    if not name:
        for cell in row.cells:
            name = " ".join("".join(cell).split())
            if name:
                break
    if name == "Breadcrumb" + row.uniqid:
        return row.uniqid
    return name


def looks_like_modules_page(html: str) -> bool:
    """True when ``html`` is the modules page (not a login form or an error page)."""
    text = html or ""
    return "module-row" in text or "pbx-extension-modules" in text or "installed-modules-table" in text


# ---------------------------------------------------------------------------------------------
# Summary and checks


def summarise(modules: list[dict[str, Any]]) -> dict[str, int]:
    """Counts per state and disable reason (only of disabled modules)."""
    summary = {"total": len(modules), "enabled": 0, "disabled": 0, "licence_problems": 0}
    for reason in DISABLE_REASONS + ("other",):
        summary["disabled_by_" + reason] = 0
    for module in modules:
        if module["enabled"]:
            summary["enabled"] += 1
            continue
        summary["disabled"] += 1
        summary["disabled_by_" + (module["disable_reason"] or "other")] += 1
        if module["licence_problem"]:
            summary["licence_problems"] += 1
    return summary


def licence_problems(modules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The modules the PBX switched off because their licence is unavailable."""
    return [
        {"uniqid": m["uniqid"], "name": m["name"], "disable_reason_text": m["disable_reason_text"]}
        for m in modules
        if m["licence_problem"]
    ]


def required_problems(modules: list[dict[str, Any]], required: Iterable[str] | None) -> list[dict[str, Any]]:
    """Every required module that is not installed, not enabled or not licensed."""
    by_id = {m["uniqid"].lower(): m for m in modules}
    problems = []
    for uniqid in required or []:
        module = by_id.get(str(uniqid).strip().lower())
        if module is None:
            problems.append({"uniqid": uniqid, "problem": "not_installed", "message": "%s is not installed" % uniqid})
        elif module["licence_problem"]:
            text = module["disable_reason_text"]
            problems.append(
                {
                    "uniqid": module["uniqid"],
                    "problem": "licence",
                    "message": "%s is disabled because its licence is unavailable%s"
                    % (module["uniqid"], (": " + text) if text else ""),
                }
            )
        elif not module["enabled"]:
            problems.append(
                {
                    "uniqid": module["uniqid"],
                    "problem": "disabled",
                    "message": "%s is disabled (reason: %s)"
                    % (module["uniqid"], module["disable_reason"] or "unknown"),
                }
            )
    return problems


def failures(
    modules: list[dict[str, Any]],
    required: list[dict[str, Any]],
    marketplace: dict[str, Any] | None,
    fail_on: Iterable[str],
) -> list[str]:
    """Sentences for every ``fail_on`` condition that holds (empty: the task passes)."""
    wanted = set(fail_on or [])
    reasons = []
    disabled = [m for m in modules if not m["enabled"]]
    if "licence" in wanted:
        ids = [m["uniqid"] for m in disabled if m["licence_problem"]]
        if ids:
            reasons.append("disabled for lack of a licence: %s" % ", ".join(ids))
    if "exception" in wanted:
        ids = [m["uniqid"] for m in disabled if m["disable_reason"] == "exception"]
        if ids:
            reasons.append("disabled after an exception: %s" % ", ".join(ids))
    if "crash_loop" in wanted:
        ids = [m["uniqid"] for m in disabled if m["disable_reason"] == "crash_loop"]
        if ids:
            reasons.append("disabled after a crash loop: %s" % ", ".join(ids))
    if "required" in wanted and required:
        reasons.append("required modules not usable: %s" % "; ".join(p["message"] for p in required))
    if "marketplace" in wanted and marketplace and marketplace.get("status") not in ("ok", "skipped"):
        reasons.append("marketplace %s: %s" % (marketplace.get("status"), marketplace.get("message")))
    return reasons


# ---------------------------------------------------------------------------------------------
# Marketplace answer and remediation helpers

_UNREACHABLE_WORDS = (
    "resolve",
    "could not connect",
    "couldn't connect",
    "failed to connect",
    "connection refused",
    "connection timed out",
    "timed out",
    "timeout",
    "no route",
    "network is unreachable",
    "unreachable",
    "ssl",
    "certificate",
)


def marketplace_status_from_answer(ok: bool, data: Any, messages: Any) -> dict[str, Any]:
    """``{status, message, modules_available}`` from the ``getAvailableModules`` answer.

    ``unreachable``: the PBX could not reach the releases server (its error names a resolver,
    connection, timeout or TLS problem); ``upstream_error``: the server answered, but with an
    error (or with something that is not a module list).
    """
    texts = message_texts(messages)
    if ok:
        listing = data.get("modules") if isinstance(data, dict) else None
        if isinstance(listing, list):
            return {
                "status": "ok",
                "message": "the PBX reaches the marketplace (%d modules offered)" % len(listing),
                "modules_available": len(listing),
            }
        return {
            "status": "upstream_error",
            "message": "the marketplace answered without a module list",
            "modules_available": None,
        }
    text = "; ".join(texts) or "the PBX reported a failure without a message"
    lowered = text.lower()
    status = "unreachable" if any(word in lowered for word in _UNREACHABLE_WORDS) else "upstream_error"
    return {"status": status, "message": text, "modules_available": None}


def message_texts(messages: Any) -> list[str]:
    """Flatten a PBX ``messages`` value (object of lists, list or string) into strings."""
    if messages is None:
        return []
    if isinstance(messages, str):
        return [messages] if messages.strip() else []
    if isinstance(messages, dict):
        texts: list[str] = []
        for value in messages.values():
            texts.extend(message_texts(value))
        return texts
    if isinstance(messages, (list, tuple)):
        texts = []
        for value in messages:
            texts.extend(message_texts(value))
        return texts
    return [str(messages)]


def licence_ids(info: Any) -> tuple[int | None, int | None]:
    """``(lic_feature_id, lic_product_id)`` from a ``getModuleInfo`` answer; None when unknown."""
    if not isinstance(info, dict):
        return None, None
    # Some answers wrap the description in a one-element list or under "data".
    feature = _positive_int(info.get("lic_feature_id"))
    product = _positive_int(info.get("lic_product_id"))
    return feature, product


def _positive_int(value: Any) -> int | None:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def remediation_candidates(modules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The modules remediation may touch: disabled for licensing, nothing else."""
    return [m for m in modules if m["licence_problem"]]


def read_modules(client: Any, warn: Callable[[str], Any] | None = None) -> list[dict[str, Any]]:
    """The installed modules of the PBX behind ``client`` as module rows (one request at most)."""
    if client.generation == "v3":
        result = client.call("system.executeSqlRequest", data={"query": MODULES_SQL, "database": SQL_DATABASE})
        rows = result.data.get("rows") if isinstance(result.data, dict) else None
        if not isinstance(rows, list):
            raise MikoPBXError(
                "system.executeSqlRequest: the PBX answered without rows",
                "server",
                url=client.url,
                hint="check that this MikoPBX version keeps installed modules in m_PbxExtensionModules",
            )
        return rows_from_sql(rows)

    page = client.admin_page(ADMIN_MODULES_PAGE)
    modules = rows_from_admin_page(page)
    if not modules and not looks_like_modules_page(page) and warn is not None:
        warn("the admin modules page of this PBX did not look like the modules page; no installed module was found")
    return modules
