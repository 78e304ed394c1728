# -*- coding: utf-8 -*-
# Copyright: contributors to the mikopbx.marketplace collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The binding of one PBX to a company licence key: verdicts, seat figures, the cabinet step.

A PBX is *bound* when it stores the company key and its machine holds a seat of that key. Only
the licensing service knows the seats; it answers the licence information of a key for a machine
that holds one of its seats and refuses (licence error 2008) any other machine. That answer is
the only read-only way to tell a bound host from one that merely stores the key string (a backup
restored onto new hardware), so every verdict here is based on it.

The pure helpers (verdict, plan, seat report, manual cabinet step, diff) are unit-tested without
HTTP. :class:`BindingManager` drives a :class:`MikoPBXClient` through the read → plan → (check
mode stops here) → write → re-read sequence of the ``mikopbx_license_binding`` module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ansible_collections.mikopbx.marketplace.plugins.module_utils.errors import MikoPBXError
from ansible_collections.mikopbx.marketplace.plugins.module_utils.licence import (
    HOST_LIMIT,
    apply_key,
    licence_error,
    mask_license_key,
    normalize_license_key,
    read_license_info,
    reset_key,
    seat_figures,
)

if TYPE_CHECKING:  # pragma: no cover
    from ansible_collections.mikopbx.marketplace.plugins.module_utils.api import MikoPBXClient

OK = "ok"
UNBOUND = "unbound"
KEY_MISMATCH = "key_mismatch"
BINDING_REQUIRED = "binding_required"
UNKNOWN = "unknown"
BINDING_STATUSES = (OK, UNBOUND, KEY_MISMATCH, BINDING_REQUIRED, UNKNOWN)

RESET_KEY = "reset_key"
APPLY_KEY = "apply_key"
RESTORE_KEY = "restore_previous_key"

SEAT_TAKEN_CODE = 2008

# The cabinet address contains the key itself, so it is only ever shown as a template.
CABINET_URL_TEMPLATE = "https://lm.mikopbx.com/client-cabinet/session/index/<license key>/"

# Failures in which the PBX itself did not answer (or refused us): these are not a verdict about
# the licensing service and must fail the task rather than turn into binding status "unknown".
_PBX_SIDE_CLASSIFICATIONS = ("auth", "tls", "rate_limited", "not_found", "unsupported")


_SOURCE_WORDS = {
    "licence_info": "the licence info answered for this machine",
    "feature_status": "the PBX's base-feature licence check for this machine",
    "key_application": "the licensing service granting the seat when the key was applied",
}


# --------------------------------------------------------------------------------------------
# Pure helpers


@dataclass
class LiveLicence:
    """What the licensing service said about this machine and its stored key.

    ``state`` is ``bound`` (licence info answered), ``not_bound`` (licence error 2008),
    ``unavailable`` (no usable answer) or ``skipped`` (not asked: no key, or a foreign key).
    ``source`` names the answer the state rests on: ``licence_info``, ``feature_status`` (2024.1
    base-feature check) or ``key_application`` (the licensing service granted the seat when the key
    was applied in this run).
    """

    state: str
    info: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    source: str | None = None


def error_summary(err: MikoPBXError) -> dict[str, Any]:
    """``{code, classification, message}`` of a licence failure, masked like the error itself."""
    return {
        "code": err.licence_code,
        "classification": err.classification,
        "message": err.describe(),
    }


def binding_verdict(stored_key: str, expected_key: str | None, live: LiveLicence) -> str:
    """The binding status from the stored key, the expected key and the live licence answer.

    A stored key string alone never makes a host ``ok``: only the licence information answered for
    this machine does.
    """
    if not stored_key:
        return UNBOUND
    if expected_key and stored_key != expected_key:
        return KEY_MISMATCH
    if live.state == "bound":
        return OK
    if live.state == "not_bound":
        return BINDING_REQUIRED
    return UNKNOWN


def plan_present(status: str, replace_key: bool) -> list[str]:
    """Writes needed to reach "this host holds the expected key and a seat of it".

    ``binding_required`` needs a reset first: applying the key that is already stored is answered
    without asking the licensing service, so it would never capture a seat.
    Raises ``ValueError`` for states the module must refuse (mismatch without ``replace_key``,
    unknown) — the caller words the message.
    """
    if status == OK:
        return []
    if status == UNBOUND:
        return [APPLY_KEY]
    if status == BINDING_REQUIRED:
        return [RESET_KEY, APPLY_KEY]
    if status == KEY_MISMATCH:
        if replace_key:
            return [RESET_KEY, APPLY_KEY]
        raise ValueError(KEY_MISMATCH)
    raise ValueError(status)


def _feature_rows(products: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for product in products:
        for feature in product.get("features", []):
            rows.append(
                {
                    "product": product.get("name"),
                    "feature": feature.get("name"),
                    "count": feature.get("count"),
                    "captured": feature.get("captured"),
                    "free": feature.get("free"),
                }
            )
    return rows


def seat_limit(count: int | None) -> int:
    """Hosts the key can still serve at most: its seat count, never more than the 10-host limit."""
    if count is None:
        return HOST_LIMIT
    return min(count, HOST_LIMIT)


def seat_report(
    info: dict[str, Any] | None = None,
    known_seats: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Seat figures: from live licence info when this host could read it, else from ``known_seats``.

    ``{source, count, captured, free, host_limit, full, holders, features [{product, feature,
    count, captured, free}]}``; None when neither source is available.
    """
    holders = list((known_seats or {}).get("holders") or [])
    if info is not None:
        products = info.get("products") or []
        figures = seat_figures(products)
        report = {"source": "licence_info", **figures, "features": _feature_rows(products)}
    elif known_seats and (known_seats.get("count") is not None or known_seats.get("captured") is not None):
        count = known_seats.get("count")
        captured = known_seats.get("captured")
        free = None if count is None or captured is None else max(count - captured, 0)
        report = {
            "source": "known_seats",
            "count": count,
            "captured": captured,
            "free": free,
            "host_limit": HOST_LIMIT,
            "features": [],
        }
    else:
        return None

    report["holders"] = holders
    report["full"] = seats_full(report)
    return report


def seats_full(seats: dict[str, Any] | None) -> bool:
    """True when the figures say no further host can take a seat."""
    if not seats or seats.get("captured") is None:
        return False
    return seats["captured"] >= seat_limit(seats.get("count"))


def describe_seats(seats: dict[str, Any] | None) -> str:
    """Seat figures in words, e.g. "10 of 10 seats captured, 0 free (a key serves at most 10 hosts)"."""
    if not seats or seats.get("captured") is None:
        return "seat figures unknown (this host cannot read them before it holds a seat; pass known_seats)"
    count = seats.get("count")
    text = "%s of %s seats captured, %s free" % (
        seats["captured"],
        "?" if count is None else count,
        "?" if seats.get("free") is None else seats["free"],
    )
    return text + " (a key serves at most %d hosts)" % HOST_LIMIT


def cabinet_page(key: str) -> str:
    """Where the operator frees a seat, without the key in clear."""
    return (
        "the licence cabinet page of key %s (open it from the PBX's Marketplace → Licence tab; its address is %s)"
        % (mask_license_key(key) or "<no key>", CABINET_URL_TEMPLATE)
    )


def manual_cabinet_step(
    key: str,
    *,
    target_host: str | None,
    previous_host: str | None,
    holders: list[str] | None,
) -> dict[str, Any]:
    """The manual step that frees a seat: the licence cabinet has no published API.

    ``target_host`` is the host that needs the seat, ``previous_host`` the gone machine whose seat
    should be reset, ``holders`` the hosts known to hold seats.
    """
    holders = list(holders or [])
    page = cabinet_page(key)
    if previous_host:
        which = "the seat (binding) of %s, the machine this PBX replaces" % previous_host
    elif holders:
        which = "the seat (binding) of one host that no longer needs it; known holders: %s" % ", ".join(holders)
    else:
        which = "the seat (binding) of one host that no longer needs it (the page lists the bound machines)"
    rerun = "then run this task again" + (" for %s" % target_host if target_host else "")
    return {
        "where": "licence cabinet (no API: this step is manual)",
        "page": page,
        "license_key_masked": mask_license_key(key),
        "reset_seat_of": previous_host,
        "holders": holders,
        "instructions": "Open %s and reset %s; %s." % (page, which, rerun),
    }


def binding_diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``before``/``after`` with only the keys that differ (values are already masked)."""
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return {
        "before": {k: before.get(k) for k in changed},
        "after": {k: after.get(k) for k in changed},
    }


# --------------------------------------------------------------------------------------------
# The module's flow


class BindingFailure(Exception):
    """The module must fail: ``msg`` (masked, one paragraph) and the result gathered so far."""

    def __init__(self, msg: str, result: dict[str, Any], error: MikoPBXError | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.result = result
        self.error = error


@dataclass
class BindingOptions:
    state: str
    license_key: str | None = None
    replace_key: bool = False
    known_seats: dict[str, Any] | None = None
    previous_host: str | None = None
    on_seat_shortage: str = "fail"
    fail_on_status: list[str] = field(default_factory=list)
    host_name: str | None = None
    force_release: bool = False


class BindingManager:
    """Read, plan and (outside check mode) change the binding of one PBX.

    ``warn`` receives operator warnings (the module passes ``module.warn``).
    """

    def __init__(
        self,
        client: MikoPBXClient,
        options: BindingOptions,
        check_mode: bool = False,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.opts = options
        self.check_mode = check_mode
        self._warn = warn or (lambda text: None)
        self.expected = normalize_license_key(options.license_key) if options.license_key else None
        self.stored = ""
        self.live = LiveLicence("skipped")
        self.status = UNKNOWN
        self.result: dict[str, Any] = {
            "changed": False,
            "binding_status": None,
            "binding_status_after": None,
            "license_key_masked": None,
            "released_key_masked": None,
            "seats": None,
            "manual_step": None,
            "actions": [],
            "licence_error": None,
            "verified_by": None,
        }

    # -- reading ---------------------------------------------------------------------------

    def _read_stored_key(self) -> str:
        settings = self.client.settings()
        stored = normalize_license_key(settings.get("PBXLicense"))
        if stored:
            self.client.add_secret(stored)
        return stored

    def probe_live(self) -> LiveLicence:
        """Ask the PBX for its licence info; 2008 means this machine holds no seat of the key."""
        try:
            info = read_license_info(self.client)
        except MikoPBXError as err:
            if err.licence_code == SEAT_TAKEN_CODE:
                return LiveLicence("not_bound", error=error_summary(err), source="licence_info")
            self._raise_if_pbx_side(err)
            if err.licence_code is None and self.client.generation == "legacy":
                return self._legacy_feature_probe(err)
            return LiveLicence("unavailable", error=error_summary(err), source="licence_info")
        return LiveLicence("bound", info=info, source="licence_info")

    @staticmethod
    def _raise_if_pbx_side(err: MikoPBXError) -> None:
        # The PBX itself did not answer (or refused us): that is no verdict about licensing.
        if err.classification in _PBX_SIDE_CLASSIFICATIONS or (err.status is None and not err.is_licence_error):
            raise err

    def _legacy_feature_probe(self, first: MikoPBXError) -> LiveLicence:
        """2024.1 answers a failed getLicenseInfo with no message at all, whether the machine holds no
        seat or the licensing service is silent. Its base-feature check (feature 33) says which."""
        try:
            self.client.call("license.getMikoPBXFeatureStatus")
        except MikoPBXError as err:
            if err.licence_code == SEAT_TAKEN_CODE:
                return LiveLicence("not_bound", error=error_summary(err), source="feature_status")
            self._raise_if_pbx_side(err)
            return LiveLicence("unavailable", error=error_summary(err), source="feature_status")
        return LiveLicence("bound", error=error_summary(first), source="feature_status")

    def read(self) -> str:
        """Current binding status (no write). A foreign key's licence info is not asked for."""
        self.stored = self._read_stored_key()
        if self.stored and not (self.expected and self.stored != self.expected):
            self.live = self.probe_live()
        self.status = binding_verdict(self.stored, self.expected, self.live)
        self.result["binding_status"] = self.status
        self.result["license_key_masked"] = mask_license_key(self.stored)
        self.result["licence_error"] = self.live.error
        self.result["verified_by"] = self.live.source
        self.result["seats"] = seat_report(self.live.info, self.opts.known_seats)
        return self.status

    # -- shaping ---------------------------------------------------------------------------

    def _snapshot(self, key: str, status: str) -> dict[str, Any]:
        return {"license_key": mask_license_key(key), "binding_status": status}

    def _finish(self, key_after: str, status_after: str, msg: str) -> dict[str, Any]:
        self.result["binding_status_after"] = status_after
        self.result["license_key_masked"] = mask_license_key(key_after)
        self.result["diff"] = binding_diff(
            self._snapshot(self.stored, self.status), self._snapshot(key_after, status_after)
        )
        self.result["msg"] = msg
        return self.result

    def _fail(self, msg: str, error: MikoPBXError | None = None) -> BindingFailure:
        if self.result.get("binding_status_after") is None:
            self.result["binding_status_after"] = self.status
        self.result["msg"] = msg
        return BindingFailure(msg, self.result, error)

    @property
    def _host(self) -> str:
        return self.opts.host_name or "this PBX"

    # -- state: verified -------------------------------------------------------------------

    def verified(self) -> dict[str, Any]:
        status = self.read()
        msg = self._verdict_message(status)
        self._finish(self.stored, status, msg)
        if status in (self.opts.fail_on_status or []):
            raise self._fail("%s (binding status %r is listed in fail_on_status)" % (msg, status))
        return self.result

    def _verdict_message(self, status: str) -> str:
        stored = mask_license_key(self.stored)
        if status == OK:
            return "%s holds key %s and a seat of it (confirmed by %s)" % (
                self._host,
                stored,
                _SOURCE_WORDS.get(self.live.source or "", "the licensing service"),
            )
        if status == UNBOUND:
            return "%s holds no licence key" % self._host
        if status == KEY_MISMATCH:
            return "%s holds key %s, not the expected key %s" % (self._host, stored, mask_license_key(self.expected))
        if status == BINDING_REQUIRED:
            return (
                "%s stores key %s but its machine holds no seat of it (licence error 2008, e.g. a backup restored "
                "onto new hardware); run state=present to re-bind it" % (self._host, stored)
            )
        reason = (self.live.error or {}).get("message") or "no answer"
        return (
            "binding of %s could not be verified: the licensing service did not confirm key %s for this machine "
            "(%s)" % (self._host, stored, reason)
        )

    # -- state: absent ---------------------------------------------------------------------

    def absent(self) -> dict[str, Any]:
        self.read()
        if not self.stored:
            return self._finish("", UNBOUND, "%s holds no licence key: nothing to release" % self._host)

        if self.expected and self.stored != self.expected:
            text = "%s holds key %s, not %s: it holds no seat of the given key, nothing released" % (
                self._host,
                mask_license_key(self.stored),
                mask_license_key(self.expected),
            )
            self._warn(text)
            return self._finish(self.stored, self.status, text)

        forced = False
        if self.live.state == "unavailable":
            # The licensing service does not answer: resetKey would only empty the key on the PBX and
            # leave this machine's seat held in the cabinet.
            if not self.opts.force_release:
                raise self._licensing_silent_refusal("release key %s" % mask_license_key(self.stored))
            forced = True
        elif self.live.state == "bound":
            # Licence info may come from the PBX's 120 s cache: ask the licensing service itself once more
            # (a read) before giving the key up.
            self._ping_before_release()
            forced = self.live.state == "unavailable"

        self.result["actions"] = [RESET_KEY]
        self.result["released_key_masked"] = mask_license_key(self.stored)
        self.result["changed"] = True
        key = mask_license_key(self.stored)
        if forced:
            self.result["manual_step"] = self._own_seat_step()
        if self.check_mode:
            if forced:
                self._warn(self._seat_stays_held_text(would=True))
            return self._finish(
                "",
                UNBOUND,
                "would %s key %s from %s (resetKey; not sent in check mode)"
                % ("clear (force_release)" if forced else "release", key, self._host),
            )

        confirmed = self._reset()
        if forced:
            self._warn(self._seat_stays_held_text(would=False))
            msg = (
                "cleared key %s from %s with force_release, but the licensing service did not answer, so the seat of "
                "this machine is still held: free it in the licence cabinet (manual_step)" % (key, self._host)
            )
        elif not confirmed:
            msg = (
                "released key %s from %s (the resetKey answer timed out; a re-read shows the key is gone); bind it "
                "elsewhere with state=present" % (key, self._host)
            )
        else:
            msg = "released key %s from %s; bind it elsewhere with state=present" % (key, self._host)
        return self._finish("", UNBOUND, msg)

    # -- guards around resetKey ------------------------------------------------------------

    def _ping_before_release(self) -> None:
        try:
            self.client.call("license.ping")
        except MikoPBXError as err:
            self._raise_if_pbx_side(err)
            self.live = LiveLicence("unavailable", error=error_summary(err), source=self.live.source)
            self.result["licence_error"] = self.live.error
            if not self.opts.force_release:
                raise self._licensing_silent_refusal("release key %s" % mask_license_key(self.stored)) from None

    def _licensing_cause(self) -> str:
        error = self.live.error or {}
        return error.get("message") or "the licensing service did not answer"

    def _own_seat_step(self) -> dict[str, Any]:
        host = self.opts.host_name or "this PBX"
        step = manual_cabinet_step(self.stored, target_host=None, previous_host=host, holders=None)
        step["instructions"] = (
            "Open %s and reset the seat (binding) of %s (this machine); the licensing service could not be told to "
            "release it." % (step["page"], host)
        )
        return step

    def _seat_stays_held_text(self, would: bool) -> str:
        return (
            "%s: the licensing service does not answer, so resetKey %s only the key stored on %s; the seat of key %s "
            "stays held by this machine until it is freed in the licence cabinet (see manual_step)"
            % (
                "force_release" if would else "force_release used",
                "would clear" if would else "cleared",
                self._host,
                mask_license_key(self.stored),
            )
        )

    def _licensing_silent_refusal(self, what: str) -> BindingFailure:
        """Refuse a reset that could not release the seat: the licensing service does not answer."""
        step = self._own_seat_step()
        self.result["manual_step"] = step
        self.result["changed"] = False
        self.result["actions"] = []
        self.result["released_key_masked"] = None
        error = self._live_error()
        return self._fail(
            "not going to %s on %s: the licensing service does not answer this PBX (%s), so resetKey would clear "
            "the key locally and leave this machine's seat held in the licence cabinet. Nothing changed. Fix: "
            "restore the PBX's access to the licensing hosts (lic.miko.ru, lic.mikopbx.com) on TCP 443 (firewall, "
            "DNS, proxy) and run this task again; or, if the machine is being decommissioned anyway, free its seat "
            "by hand: %s (force_release: true then also clears the key on the PBX)"
            % (what, self._host, self._licensing_cause(), step["instructions"]),
            error,
        )

    def _live_error(self) -> MikoPBXError:
        error = self.live.error or {}
        classification = error.get("classification") or "unreachable"
        return MikoPBXError(
            "the licensing service did not answer: %s" % self._licensing_cause(),
            classification,
            licence_code=error.get("code"),
            hint="restore the PBX's access to the licensing hosts on TCP 443 and re-run",
        )

    def _reread_key(self) -> str | None:
        """The stored key read afresh after a write whose answer was lost; None when it cannot be read."""
        self.client.invalidate_settings()
        try:
            return self._read_stored_key()
        except MikoPBXError:
            return None

    def _reset(self) -> bool:
        """Send resetKey once (never repeated). True when confirmed; False when the answer failed but a
        re-read shows the key is gone (the release happened). Otherwise fails saying what the host holds."""
        try:
            reset_key(self.client)
        except MikoPBXError as err:
            stored = self._reread_key()
            if stored == "":
                self._warn(
                    "resetKey on %s failed (%s) but a re-read shows the key %s is gone: the release happened, only "
                    "its confirmation was lost" % (self._host, err.message, mask_license_key(self.stored))
                )
                return False
            self.result["changed"] = False
            self.result["actions"] = []
            self.result["released_key_masked"] = None
            if stored is None:
                self.result["binding_status_after"] = UNKNOWN
                raise self._fail(
                    "resetKey on %s failed (%s) and the stored key could not be re-read, so it is unknown whether key "
                    "%s was released. Do not repeat the reset blindly: run state=verified first, then re-run"
                    % (self._host, err.describe(), mask_license_key(self.stored)),
                    err,
                ) from None
            raise self._fail(
                "resetKey on %s failed (%s); a re-read shows the PBX still holds key %s, so nothing changed and it is "
                "safe to run this task again" % (self._host, err.describe(), mask_license_key(stored)),
                err,
            ) from None
        finally:
            self.client.invalidate_settings()
        return True

    # -- state: present --------------------------------------------------------------------

    def present(self) -> dict[str, Any]:
        if not self.expected:
            raise self._fail("state=present needs license_key")
        status = self.read()

        try:
            actions = plan_present(status, self.opts.replace_key)
        except ValueError:
            raise self._refusal(status) from None

        if not actions:
            return self._finish(self.stored, OK, self._verdict_message(OK))

        # A seat will be captured: refuse before any write when the figures say none is free.
        seats = self.result["seats"]
        if seats_full(seats):
            return self._seat_shortage(
                "all seats of key %s are taken: %s" % (mask_license_key(self.expected), describe_seats(seats))
            )

        if RESET_KEY in actions and self.live.state != "not_bound":
            self._ensure_licensing_answers()

        self.result["actions"] = actions
        self.result["changed"] = True
        if RESET_KEY in actions:
            self.result["released_key_masked"] = mask_license_key(self.stored)
        if self.check_mode:
            return self._finish(self.expected, OK, self._plan_message(actions, would=True))

        if RESET_KEY in actions:
            self._reset()
        try:
            applied = apply_key(self.client, self.expected)
        except MikoPBXError as err:
            return self._apply_refused(err, actions, seats)
        self.client.invalidate_settings()
        key_now = normalize_license_key(applied.get("stored_key")) or self.expected

        return self._verify_after_write(key_now, actions)

    def _apply_refused(self, err: MikoPBXError, actions: list[str], seats: dict[str, Any] | None) -> dict[str, Any]:
        """The new key was not accepted. Re-read what the PBX holds and, when the reset gave up a working
        key, put that key back once; then fail saying exactly what the host holds now."""
        reset_done = RESET_KEY in actions
        self.result["licence_error"] = error_summary(err)
        stored = self._reread_key()
        if stored == self.expected:
            # Only the answer was lost (e.g. a timeout): the key is stored; the licence info decides.
            self._warn(
                "applying key %s to %s answered with a failure (%s) but a re-read shows the key is stored"
                % (mask_license_key(self.expected), self._host, err.message)
            )
            return self._verify_after_write(stored, actions)

        previous = self.stored if reset_done else ""
        rollback: str | None = None  # None: nothing to restore; "restored" / "failed" / "skipped"
        rollback_error: MikoPBXError | None = None
        if reset_done and previous and stored == "":
            if previous == self.expected and err.is_licence_error:
                # The key that was just refused is the previous key itself (re-bind): sending it again
                # would be refused the same way.
                rollback = "skipped"
            else:
                try:
                    apply_key(self.client, previous)
                    rollback = "restored"
                except MikoPBXError as again:
                    rollback = "failed"
                    rollback_error = again
                stored = self._reread_key()
                if rollback == "failed" and stored == previous:
                    rollback = "restored"
        key_after = stored if stored is not None else ""
        status_after = self._status_after_failure(stored, previous, rollback)
        self.result["binding_status_after"] = status_after
        self.result["license_key_masked"] = mask_license_key(key_after)
        if rollback == "restored":
            self.result["actions"] = actions + [RESTORE_KEY]
            self.result["changed"] = False
            self.result["released_key_masked"] = None
        elif reset_done:
            self.result["actions"] = [RESET_KEY] if rollback != "failed" else [RESET_KEY, RESTORE_KEY]
            self.result["changed"] = stored != previous
        else:
            self.result["actions"] = []
            self.result["changed"] = False
        state_text = self._state_after_refusal(stored, previous, rollback, rollback_error)

        if err.licence_code == SEAT_TAKEN_CODE:
            return self._seat_shortage(
                "the licensing service refused a seat of key %s for %s (licence error 2008: all seats are held by "
                "other machines; the new key was not stored): %s"
                % (mask_license_key(self.expected), self._host, describe_seats(seats)),
                key_after=key_after,
                status_after=status_after,
                state_text=state_text,
                error=err,
                keep_actions=True,
            )
        if reset_done and not self.result.get("manual_step") and rollback != "restored" and previous:
            self.result["manual_step"] = manual_cabinet_step(
                previous, target_host=self.opts.host_name, previous_host=None, holders=None
            )
        raise self._fail(
            "the new key %s was refused by %s: %s. %s"
            % (mask_license_key(self.expected), self._host, err.describe(), state_text),
            err,
        )

    def _status_after_failure(self, stored: str | None, previous: str, rollback: str | None) -> str:
        if stored is None:
            return UNKNOWN
        if not stored:
            return UNBOUND
        if stored != self.expected:
            # The previous (different) key is back, or another key is stored: not the expected one.
            return KEY_MISMATCH if self.expected else UNKNOWN
        return UNKNOWN  # the expected key is stored but its seat was not confirmed

    def _state_after_refusal(
        self, stored: str | None, previous: str, rollback: str | None, rollback_error: MikoPBXError | None
    ) -> str:
        prev = mask_license_key(previous)
        if stored is None:
            return (
                "The stored key could not be re-read afterwards, so the state of %s is UNKNOWN (its previous key was "
                "%s). Run state=verified before anything else" % (self._host, prev or "none")
            )
        if rollback == "restored":
            return (
                "The previous key %s was applied again and is stored on %s, with the seat of this machine that the "
                "reset had released; nothing is lost. Fix the key and re-run" % (prev, self._host)
            )
        if rollback == "failed":
            return (
                "ATTENTION: %s now holds no key. The reset released the previous key %s and applying it "
                "again failed too (%s). Apply the previous key by hand (Marketplace -> Licence, or this module with "
                "license_key set to it); if its seat is no longer free, reset the seat of this machine in the licence "
                "cabinet first (manual_step)"
                % (self._host, prev, rollback_error.describe() if rollback_error else "no answer")
            )
        if rollback == "skipped":
            return (
                "ATTENTION: %s now holds no key. Its key %s had no seat on this machine; it was reset to "
                "capture one and the licensing service refused it, so it could not be stored again. Free a seat in "
                "the licence cabinet (manual_step), then run this task again" % (self._host, prev)
            )
        if previous and not stored:
            return "%s now holds no key (previous key %s)" % (self._host, prev)
        if stored == previous:
            return "Nothing changed: %s still holds %s" % (self._host, mask_license_key(stored) or "no key")
        return "%s now holds key %s" % (self._host, mask_license_key(stored))

    def _ensure_licensing_answers(self) -> None:
        """Before a reset that nothing has shown to be safe: the current key is only given up when the
        licensing service answers, otherwise the new key could not be applied and the PBX would be
        left with no key at all. (A 2008 answer already proved the service answers.)"""
        try:
            self.client.call("license.ping")
        except MikoPBXError as err:
            self._raise_if_pbx_side(err)
            self.result["licence_error"] = error_summary(err)
            raise self._fail(
                "not replacing key %s on %s: the PBX cannot reach the licensing service (license:ping failed), so "
                "the reset would not release the seat and the new key could not be applied. Nothing changed. Fix: "
                "restore the PBX's access to the licensing hosts on TCP 443 and run this task again; %s"
                % (mask_license_key(self.stored), self._host, err.describe()),
                err,
            ) from None

    def _verify_after_write(self, key_now: str, actions: list[str]) -> dict[str, Any]:
        live = self.probe_live()
        if live.state == "not_bound" and self.client.generation == "legacy" and self.live.state == "not_bound":
            # 2024.1 keeps a failed licence answer cached for 120 s per key, and this run has just
            # asked for this key: the "no seat" answer predates the apply. The licensing service
            # granted the seat when it accepted the key, which is the live answer to rely on.
            self._warn(
                "MikoPBX 2024.1 still answers the licence check of key %s from its 120-second cache of the failure "
                "seen before the re-bind; the seat was granted when the key was applied. Run state=verified after "
                "two minutes to see it confirmed by licence info" % mask_license_key(key_now)
            )
            live = LiveLicence("bound", error=live.error, source="key_application")
        after = binding_verdict(key_now, self.expected, live)
        self.live = live
        if live.info is not None:
            self.result["seats"] = seat_report(live.info, self.opts.known_seats)
        self.result["licence_error"] = live.error
        self.result["verified_by"] = live.source
        self._finish(key_now, after, self._plan_message(actions, would=False))
        if after != OK:
            raise self._fail(
                "key %s was applied to %s but the licence info does not confirm the binding (status %s): %s"
                % (mask_license_key(key_now), self._host, after, (live.error or {}).get("message") or "no answer")
            )
        return self.result

    def _plan_message(self, actions: list[str], would: bool) -> str:
        key = mask_license_key(self.expected)
        if RESET_KEY in actions and self.status == KEY_MISMATCH:
            text = "replace key %s with %s on %s (reset, then apply)" % (mask_license_key(self.stored), key, self._host)
        elif RESET_KEY in actions:
            text = "re-bind key %s on %s to capture a seat for this machine (reset, then apply)" % (key, self._host)
        else:
            text = "bind key %s to %s (apply; captures a seat)" % (key, self._host)
        if would:
            return "would " + text + "; nothing sent in check mode"
        source = _SOURCE_WORDS.get(self.live.source or "", "the licensing service")
        return text[0].upper() + text[1:] + "; seat confirmed by " + source

    def _refusal(self, status: str) -> BindingFailure:
        if status == KEY_MISMATCH:
            return self._fail(
                "%s holds a different licence key (%s) than license_key (%s): nothing changed. To replace it, set "
                "replace_key: true (resets the current key, releasing its seat, then applies the new one)"
                % (self._host, mask_license_key(self.stored), mask_license_key(self.expected))
            )
        return self._fail(
            "cannot ensure the binding of %s: %s. Nothing changed; retry when the PBX reaches the licensing service"
            % (self._host, self._verdict_message(status))
        )

    def _seat_shortage(
        self,
        reason: str,
        *,
        key_after: str | None = None,
        status_after: str | None = None,
        state_text: str | None = None,
        error: MikoPBXError | None = None,
        keep_actions: bool = False,
    ) -> dict[str, Any]:
        """No seat for this host: fail (or warn) with the manual cabinet step; no further write."""
        holders = list((self.opts.known_seats or {}).get("holders") or [])
        step = manual_cabinet_step(
            self.expected or "", target_host=self.opts.host_name, previous_host=self.opts.previous_host, holders=holders
        )
        self.result["manual_step"] = step
        if not keep_actions:
            self.result["changed"] = False
            self.result["actions"] = []
            self.result["released_key_masked"] = None
        key_after = self.stored if key_after is None else key_after
        status_after = self.status if status_after is None else status_after

        parts = [reason]
        if holders:
            parts.append("hosts holding seats: %s" % ", ".join(holders))
        if state_text:
            parts.append(state_text)
        parts.append("a seat must be freed in the licence cabinet: %s" % step["instructions"])
        msg = "; ".join(parts)
        self._finish(key_after, status_after, msg)

        if error is None:
            # Predicted from the seat figures, before asking: reported like the 2008 it would have been,
            # so a fleet summary groups this host with the ones the licensing service refused.
            error = licence_error(
                SEAT_TAKEN_CODE,
                reason,
                hint=step["instructions"],
            )
        self.result["licence_error"] = error_summary(error)

        if self.opts.on_seat_shortage == "warn":
            self._warn(msg)
            return self.result
        raise self._fail(msg, error)

    # -- entry point -----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        if self.opts.state == "absent":
            return self.absent()
        if self.opts.state == "verified":
            return self.verified()
        return self.present()
