# -*- coding: utf-8 -*-
# Copyright: contributors to the mikopbx.marketplace collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Connection options shared by every mikopbx.marketplace module. Keep in sync with
    # plugins/module_utils/common.py connection_argument_spec().
    DOCUMENTATION = r"""
options:
  url:
    description:
      - Base URL of the MikoPBX web interface, for example V(https://pbx.example.net) or
        V(https://192.0.2.10:8443).
      - Use C(https://); MikoPBX 2026.1 redirects plain HTTP to HTTPS.
      - Give the base URL only. A path (such as C(/admin-cabinet/)), a query, a scheme other than C(https) or
        C(http), and credentials written into the URL (C(user:password@)) are refused before any request; give
        credentials in O(username) and O(password) or O(api_key). A password found in the URL is masked in the
        task's output.
      - If not set, the value of the E(MIKOPBX_URL) environment variable is used.
    type: str
    required: true
  api_key:
    description:
      - REST API key of the PBX (MikoPBX 2026.1 and later), sent as a Bearer token.
      - Preferred over O(username)/O(password); implies O(api_generation=v3) when that is V(auto).
      - Licence and module operations need a key with full permissions.
      - If not set, the value of the E(MIKOPBX_API_KEY) environment variable is used.
    type: str
  username:
    description:
      - Web administrator login, used when O(api_key) is not given.
      - If not set, the value of the E(MIKOPBX_USERNAME) environment variable is used.
    type: str
  password:
    description:
      - Password of O(username).
      - At most one failed login is attempted per PBX and run, because the PBX bans addresses
        after repeated failures. After a refused login, later tasks with the same O(username) and
        O(password) for the same O(url) fail at once without contacting the PBX, for 10 minutes
        after rejected credentials, or as long as the PBX asks after a login lockout (HTTP 429); a
        changed password is tried immediately. The controller keeps this in a small file (a salted
        fingerprint, never the password) under the system temporary directory; the environment
        variable E(MIKOPBX_LOGIN_MEMO_DIR) moves it and E(MIKOPBX_LOGIN_MEMO=0) switches it off.
      - After a successful login, the session is reused by later tasks with the same O(url),
        O(username) and O(password) instead of logging in again (MikoPBX 2024.1 counts every login,
        successful or not, against 10 per address in 5 minutes). MikoPBX 2024.1 sessions are reused
        for up to 50 minutes after the login. MikoPBX 2026.1 access tokens are reused until shortly
        before they expire, then renewed with the refresh token. If the PBX no longer accepts a
        stored session, it is renewed once (a token refresh or one new login). Sessions are stored
        in private files (mode 0600) named by a salted fingerprint, in a C(sessions) subdirectory of
        the directory above. The password is never stored. E(MIKOPBX_SESSION_CACHE_DIR) moves them,
        and E(MIKOPBX_SESSION_CACHE=0) switches the reuse off.
      - If not set, the value of the E(MIKOPBX_PASSWORD) environment variable is used.
    type: str
  validate_certs:
    description:
      - Verify the TLS certificate of the PBX on every request.
      - A fresh PBX uses a self-signed certificate; point O(ca_path) at it, or set this to V(false).
      - If not set, the value of the E(MIKOPBX_VALIDATE_CERTS) environment variable is used.
    type: bool
    default: true
  ca_path:
    description:
      - CA bundle (or the PBX's own certificate) used to verify the PBX certificate.
      - When set, it is used for verification even if O(validate_certs) is V(false).
      - The file or directory must exist on the controller; this is checked before any request.
      - If not set, the value of the E(MIKOPBX_CA_PATH) environment variable is used.
    type: path
  timeout:
    description:
      - Seconds to wait for each HTTP answer of the PBX.
      - The PBX itself gives up on a request after 30 s (2026.1) or 10 s (2024.1).
      - At least V(1).
      - If not set, the value of the E(MIKOPBX_TIMEOUT) environment variable is used.
    type: int
    default: 40
  api_generation:
    description:
      - REST API generation of the PBX. V(v3) is MikoPBX 2026.1 and later, V(legacy) is 2024.x.
      - V(auto) uses V(v3) with O(api_key), otherwise it tries the v3 login and falls back to
        V(legacy) when the PBX does not know it.
      - If not set, the value of the E(MIKOPBX_API_GENERATION) environment variable is used.
    type: str
    choices: [auto, v3, legacy]
    default: auto
  retries:
    description:
      - How many times a read that is safe to repeat is retried after a transient failure
        (HTTP 429, 502, 503, 504, a worker timeout, a reset connection, a locked database),
        with exponential back-off and C(Retry-After) honoured.
      - Writes are never repeated by the client.
      - V(0) or more; V(0) never repeats a request.
      - If not set, the value of the E(MIKOPBX_RETRIES) environment variable is used.
    type: int
    default: 3
requirements:
  - requests >= 2.31
notes:
  - "The modules run on the Ansible controller (MikoPBX ships no Python); use C(connection: local)
    or C(delegate_to: localhost) with one inventory host per PBX."
"""
