"""MikoPBX fleet emulator: many emulated MikoPBX stations (2024.1 legacy and 2026.1 v3 REST APIs)
in one process, a shared emulated licensing service, fault injection and a control API."""

from __future__ import annotations

__version__ = "0.1.0"
