"""Small shared helpers: emulated clock, atomic persistence, id generation."""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import string
import tempfile
import time
from pathlib import Path
from typing import Any

KEY_ALPHABET = string.ascii_uppercase + string.digits


class Clock:
    """Emulated wall clock.

    Emulated time runs ``1 / scale`` times faster than real time, so with ``--time-scale 0.01``
    every wait (licence ping pauses, worker timeouts, the hourly module check) takes 1/100 of its
    real duration and every expiry (tokens, the 120 s licence-info cache, rate-limit windows)
    comes 100 times sooner, consistently.  ``advance`` jumps forward without waiting.
    """

    def __init__(self, scale: float = 1.0, start: float | None = None) -> None:
        if scale <= 0:
            raise ValueError("time scale must be > 0")
        self.scale = scale
        self._mono0 = time.monotonic()
        self._base = start if start is not None else time.time()
        self._waiters: list[asyncio.Event] = []

    def now(self) -> float:
        return self._base + (time.monotonic() - self._mono0) / self.scale

    def advance(self, seconds: float) -> None:
        self._base += seconds
        for ev in list(self._waiters):
            ev.set()

    def real(self, emulated_seconds: float) -> float:
        return max(0.0, emulated_seconds * self.scale)

    async def sleep(self, emulated_seconds: float) -> None:
        """Sleep for emulated seconds; an ``advance`` past the deadline wakes it early."""
        deadline = self.now() + emulated_seconds
        while True:
            remaining = deadline - self.now()
            if remaining <= 0:
                return
            ev = asyncio.Event()
            self._waiters.append(ev)
            try:
                await asyncio.wait_for(ev.wait(), timeout=self.real(remaining))
            except TimeoutError:
                pass
            finally:
                self._waiters.remove(ev)

    def wake_event(self) -> asyncio.Event:
        ev = asyncio.Event()
        self._waiters.append(ev)
        return ev

    def drop_event(self, ev: asyncio.Event) -> None:
        if ev in self._waiters:
            self._waiters.remove(ev)


_KNOWN_DIRS: set[Path] = set()


def atomic_write_bytes(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write via a temp file in the same directory + os.replace, so readers (and a restart after a
    kill) only ever see the old or the new complete file."""
    if path.parent not in _KNOWN_DIRS:
        path.parent.mkdir(parents=True, exist_ok=True)
        _KNOWN_DIRS.add(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if fsync:
        try:
            dfd = os.open(path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def atomic_write_json(path: Path, obj: Any, *, fsync: bool = True) -> None:
    # no indent: only the compact form uses the C encoder (state files are written on every change)
    data = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    atomic_write_bytes(path, data.encode(), fsync=fsync)


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default


class Ids:
    """Random source: deterministic with ``--seed`` (repeatable fleets), otherwise ``secrets``."""

    def __init__(self, seed: int | None) -> None:
        self._rng: random.Random | None = random.Random(seed) if seed is not None else None

    def _choice(self, alphabet: str, n: int) -> str:
        if self._rng is None:
            # one urandom call per string (secrets.choice per character is slow at fleet start);
            # the small modulo bias is irrelevant for an emulator
            return "".join(alphabet[b % len(alphabet)] for b in secrets.token_bytes(n))
        return "".join(self._rng.choices(alphabet, k=n))

    def hex(self, n: int) -> str:
        if self._rng is None:
            return secrets.token_hex((n + 1) // 2)[:n]
        return self._choice("0123456789abcdef", n)

    def password(self) -> str:
        return self._choice(string.ascii_letters + string.digits, 20)

    def licence_key(self) -> str:
        return "MIKO-" + "-".join(self._choice(KEY_ALPHABET, 5) for _n in range(4))

    def coupon(self) -> str:
        return "MIKOUPD-" + "-".join(self._choice(KEY_ALPHABET, 5) for _n in range(4))

    def machine_id(self) -> str:
        return self.hex(32)

    def uniform(self, a: float, b: float) -> float:
        if self._rng is None:
            return random.uniform(a, b)
        return self._rng.uniform(a, b)


def iso(ts: float) -> str:
    """ISO-8601 with offset like PHP's date('c')."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(ts))


def ymd(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))
