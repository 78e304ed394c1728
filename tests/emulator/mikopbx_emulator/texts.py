"""Fixed strings the emulator answers with.

Two kinds of text exist on a real PBX:

* *raw* licence-library errors, which carry the numeric code at the start (``"2008: ..."``); they
  reach the client untranslated in v3 ``getLicenseInfo`` failures, in legacy ``processUserRequest``
  failures other than 2026, and in ``disableReasonText``;
* *translated* messages (``lic_*`` translation keys rendered in English).  The real English
  wording is not known to us; the sentences below are our own paraphrases and deliberately do
  **not** contain the numeric code, so a client cannot rely on finding it there.

Literal strings that the reference quotes verbatim (auth errors, 404/405 texts, worker timeout,
nginx 429) are reproduced exactly.
"""

from __future__ import annotations

# --- literal strings from the reference -------------------------------------------------------
NOT_AUTHENTICATED = "The user isn't authenticated."
ACCESS_DENIED = "Access denied. You do not have permission to access this resource."
LEGACY_NOT_ALLOWED = "The route is not allowed"
LEGACY_404 = "404 (Not Found)"
LEGACY_500 = "500 (Internal Server Error) "
WORKER_TIMEOUT = "Request timeout or worker not responding"
QUEUE_FULL = "Service temporarily unavailable, please retry later"
NGINX_429 = "Too many requests"
NOT_AUTHORIZED_XHR = "This user is not authorized"
DB_LOCKED = "SQLSTATE[HY000]: General error: 5 database is locked"
FEATURE_IDS_EMPTY = "The feature id or product id is empty."
WRONG_MODULE_INFO = "Wrong module info"


def endpoint_not_found(uri: str) -> str:
    return f"Endpoint not found: {uri}"


def method_not_allowed(method: str, verb: str) -> str:
    return f"Method '{method}' is not allowed with HTTP {verb}"


def unknown_action(action: str, processor: str) -> str:
    return f"Unknown action - {action} in {processor}"


# --- auth (translated; our wording) --------------------------------------------------------------
AUTH_LOGIN_PASSWORD_REQUIRED = "Login and password, or a session token, are required"
AUTH_WRONG_LOGIN_PASSWORD = "Invalid login or password"
AUTH_REFRESH_MISSING = "Refresh token is missing"
AUTH_REFRESH_EXPIRED = "Refresh token has expired or is unknown"
AUTH_LOGOUT_OK = "Successfully logged out"


def auth_too_many(seconds: int) -> str:
    return f"Too many login attempts. Try again in {seconds} seconds"


def legacy_login_failed(attempts_left: int) -> str:
    return f"Wrong login or password. {attempts_left} attempts left"


LEGACY_TOO_MANY = "Too many login attempts. Please wait a few minutes and try again"

# --- licence: translated (our paraphrases, no codes) -------------------------------------------
LIC_TRANSLATED: dict[str, str] = {
    "lic_FailedCheckLicense2026": "The licence key number is wrong. Check the key and try again",
    "lic_InvalidLicenseKey2009": "The licence key is invalid or has been blocked",
    "lic_FailedToCaptureFeature2008": (
        "The required licence is missing, or it is bound to a different MikoPBX station"
    ),
    "lic_FeatureExpired2011": "The licence for this module has expired. Please contact the sales department",
    "lic_FailedActivateCoupon2037": "The registration key given together with the coupon is wrong",
    "lic_FailedActivateCoupon2040": "There is no such coupon",
    "lic_FailedActivateCoupon2041": "This coupon has already been used",
    "lic_FailedActivateCoupon2057": "This coupon is blocked",
    "lic_FailedToGetTrialKey2022": (
        "A key for a different company was already issued to this e-mail address. Use the key sent "
        "earlier or correct the company name"
    ),
    "lic_FailedToGetTrialKey2051": (
        "This station was already registered with another e-mail address. Use the key issued earlier"
    ),
    "lic_FailedCheckLicense": (
        "The licensing server did not answer. Check the Internet connection settings of the station"
    ),
    "lic_HostLookupFailed": "Cannot reach the licensing server: host name lookup failed (check DNS)",
    "lic_UnknownLicenseMessage": "The licensing subsystem returned no answer",
    "lic_GetTrialErrorCheckInternet": "Registration failed. Check the Internet access of the station",
    "lic_WrongLicenseKeyOrEmpty": "License key entered incorrectly",
    "lic_SuccessfulActivation": "Registration completed successfully",
    "lic_SuccessfulCouponActivation": "The coupon was activated successfully",
}

# which translation key a raw library code maps to (the library's own translate step)
CODE_TO_KEY: dict[int, str] = {
    2026: "lic_FailedCheckLicense2026",
    2009: "lic_InvalidLicenseKey2009",
    2008: "lic_FailedToCaptureFeature2008",
    2011: "lic_FeatureExpired2011",
    2037: "lic_FailedActivateCoupon2037",
    2040: "lic_FailedActivateCoupon2040",
    2041: "lic_FailedActivateCoupon2041",
    2057: "lic_FailedActivateCoupon2057",
    2022: "lic_FailedToGetTrialKey2022",
    2051: "lic_FailedToGetTrialKey2051",
}

# --- licence: raw library errors (code first, like the closed library's strings) ---------------
RAW: dict[int, str] = {
    2026: "2026: License key not found",
    2009: "2009: License key is blocked",
    2008: "2008: Failed to capture feature: no free licences, or the licence is bound to another PBX",
    2011: "2011: Feature license expired",
    2037: "2037: Wrong registration number for the coupon",
    2040: "2040: Coupon not found",
    2041: "2041: Coupon already activated",
    2057: "2057: Coupon is blocked",
    2022: "2022: A key for another company was already issued to this e-mail",
    2051: "2051: This machine is already registered with another e-mail",
}
RAW_NO_ANSWER = "0: No answer from the local licence service"
RAW_HOST_LOOKUP = "0: Could not resolve host: lic.mikopbx.com"
RAW_UPSTREAM_TIMEOUT = "0: Connection timed out: lic.mikopbx.com:443"
RAW_TLS = "0: SSL certificate problem: self-signed certificate in certificate chain"
RAW_UPSTREAM_5XX = "503: Service Unavailable"
RAW_TRIAL_FIELDS = "Required registration data is missing: companyname, email and contact must be set"


def translate_code(code: int) -> str:
    key = CODE_TO_KEY.get(code)
    return LIC_TRANSLATED[key] if key else LIC_TRANSLATED["lic_UnknownLicenseMessage"]


def tr(key: str) -> str:
    return LIC_TRANSLATED[key]


# --- modules -------------------------------------------------------------------------------------
def module_not_found(uniqid: str) -> str:
    return f"Module {uniqid} is not installed"


def releases_unreachable(detail: str) -> str:
    return f"Failed to get data from https://releases.mikopbx.com: {detail}"


PROBE_REFUSED = "The emulator only runs the mikopbx-probe-v1 reachability probe; other commands are refused"
SQL_ONLY_SELECT = "The emulator only answers read-only SELECT statements"
