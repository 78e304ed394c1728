"""The emulated licensing service (the vendor's licence server + cabinet) and releases catalogue.

The real licence library is closed source; this is our reading of the reference (see
docs/design.md §2 "Licensing model").  All PBXs of a fleet share one instance, held in memory and
persisted to ``<state-dir>/licensing.json`` after every change.

Errors are returned as ``LicError(code, raw)``; ``raw`` is what the library hands to PHP (code
first, e.g. ``"2008: ..."``).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import texts
from .util import Ids, atomic_write_json, read_json, ymd

MIKOPBX_PRODUCT_ID = 11
BASE_FEATURE_ID = 33
DEFAULT_SEATS = 10
TRIAL_DAYS = 30


@dataclass
class LicError(Exception):
    code: int
    raw: str

    @classmethod
    def of(cls, code: int) -> LicError:
        return cls(code, texts.RAW[code])


# Module catalogue of the emulated releases server.  Product/feature ids of commercial modules are
# invented (the real ids are not public); free modules have 0.
DEFAULT_CATALOGUE: list[dict[str, Any]] = [
    {
        "uniqid": "ModuleUsersUI",
        "name": "Users and access rights",
        "developer": "MIKO",
        "description": "Web interface users with roles",
        "version": "1.3.2",
        "min_pbx_version": "2024.1.1",
        "commercial": 1,
        "lic_product_id": 101,
        "lic_feature_id": 201,
        "release_id": 5101,
        "size": 2345678,
    },
    {
        "uniqid": "ModuleBitrix24Integration",
        "name": "Bitrix24 integration",
        "developer": "MIKO",
        "description": "CRM integration",
        "version": "2.4.0",
        "min_pbx_version": "2024.1.1",
        "commercial": 1,
        "lic_product_id": 102,
        "lic_feature_id": 202,
        "release_id": 5102,
        "size": 3456789,
    },
    {
        "uniqid": "ModuleAutoDialer",
        "name": "Auto dialer",
        "developer": "MIKO",
        "description": "Outbound campaigns",
        "version": "1.1.5",
        "min_pbx_version": "2024.1.1",
        "commercial": 1,
        "lic_product_id": 103,
        "lic_feature_id": 203,
        "release_id": 5103,
        "size": 1234567,
    },
    {
        "uniqid": "ModuleQueueCallBack",
        "name": "Queue call back",
        "developer": "MIKO",
        "description": "Call back from queues",
        "version": "1.0.9",
        "min_pbx_version": "2024.1.1",
        "commercial": 1,
        "lic_product_id": 104,
        "lic_feature_id": 204,
        "release_id": 5104,
        "size": 987654,
    },
    {
        "uniqid": "ModuleTemplate",
        "name": "Module template",
        "developer": "MIKO",
        "description": "Example module",
        "version": "1.0.0",
        "min_pbx_version": "2024.1.1",
        "commercial": 0,
        "lic_product_id": 0,
        "lic_feature_id": 0,
        "release_id": 5105,
        "size": 123456,
    },
    {
        "uniqid": "ModuleBackup",
        "name": "Backup",
        "developer": "MIKO",
        "description": "Backups",
        "version": "1.6.1",
        "min_pbx_version": "2024.1.1",
        "commercial": 0,
        "lic_product_id": 0,
        "lic_feature_id": 0,
        "release_id": 5106,
        "size": 654321,
    },
]


def catalogue_entry(uniqid: str) -> dict[str, Any] | None:
    for m in DEFAULT_CATALOGUE:
        if m["uniqid"] == uniqid:
            return m
    return None


def _product_for(product_id: int) -> dict[str, Any] | None:
    if product_id == MIKOPBX_PRODUCT_ID:
        return {"id": MIKOPBX_PRODUCT_ID, "name": "MikoPBX"}
    for m in DEFAULT_CATALOGUE:
        if m["lic_product_id"] == product_id:
            return {"id": product_id, "name": m["name"], "feature_id": m["lic_feature_id"]}
    return None


def _norm_feature(f: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": int(f["id"]),
        "name": str(f.get("name") or f"Feature {f['id']}"),
        "count": int(f.get("count", 1)),
        "counteach": int(f.get("counteach", 1)),
        "seats": dict(f.get("seats") or {}),
    }


def _norm_product(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": int(p["id"]),
        "name": str(p.get("name") or f"Product {p['id']}"),
        "expired": str(p.get("expired") or ""),
        "trial": bool(p.get("trial", False)),
        "features": [_norm_feature(f) for f in p.get("features") or []],
    }


class LicensingService:
    def __init__(self, path: Path | None, ids: Ids, clock_now: Any) -> None:
        self.path = path
        self.ids = ids
        self.now = clock_now
        data = read_json(path, None) if path else None
        data = data or {}
        self.companies: dict[str, dict[str, Any]] = data.get("companies", {})
        self.coupons: dict[str, dict[str, Any]] = data.get("coupons", {})
        self.trial_machines: dict[str, str] = data.get("trial_machines", {})
        self.metrics: list[dict[str, Any]] = data.get("metrics", [])[-200:]

    # ---- persistence --------------------------------------------------------------------------
    def save(self) -> None:
        if self.path is None:
            return
        atomic_write_json(
            self.path,
            {
                "companies": self.companies,
                "coupons": self.coupons,
                "trial_machines": self.trial_machines,
                "metrics": self.metrics,
            },
        )

    # ---- cabinet / control operations -------------------------------------------------------
    def create_company(
        self,
        companyname: str,
        email: str = "",
        contact: str = "",
        tel: str = "",
        inn: str = "",
        seats: int = DEFAULT_SEATS,
        products: list[dict[str, Any]] | None = None,
        key: str | None = None,
    ) -> str:
        key = key or self._new_key()
        prods = [_norm_product(p) for p in (products or [])]
        if not any(p["id"] == MIKOPBX_PRODUCT_ID for p in prods):
            prods.insert(
                0,
                {
                    "id": MIKOPBX_PRODUCT_ID,
                    "name": "MikoPBX",
                    "expired": "",
                    "trial": False,
                    "features": [
                        {
                            "id": BASE_FEATURE_ID,
                            "name": "MikoPBX base",
                            "count": int(seats),
                            "counteach": 1,
                            "seats": {},
                        }
                    ],
                },
            )
        self.companies[key] = {
            "key": key,
            "companyname": companyname,
            "email": email,
            "contact": contact,
            "tel": tel,
            "inn": inn,
            "revoked": False,
            "products": prods,
            "created_at": self.now(),
        }
        self.save()
        return key

    def _new_key(self) -> str:
        while True:
            k = self.ids.licence_key()
            if k not in self.companies:
                return k

    def update_company(self, key: str, patch: dict[str, Any]) -> dict[str, Any]:
        c = self.companies[key]
        for f in ("companyname", "email", "contact", "tel", "inn"):
            if f in patch:
                c[f] = str(patch[f])
        if "revoked" in patch:
            c["revoked"] = bool(patch["revoked"])
        if "products" in patch:
            # keep seats of features that survive the replacement
            old = {(p["id"], f["id"]): f["seats"] for p in c["products"] for f in p["features"]}
            prods = [_norm_product(p) for p in patch["products"]]
            for p in prods:
                for f in p["features"]:
                    if not f["seats"]:
                        f["seats"] = dict(old.get((p["id"], f["id"]), {}))
            c["products"] = prods
        self.save()
        return c

    def create_coupon(
        self,
        product_id: int = MIKOPBX_PRODUCT_ID,
        feature_id: int = BASE_FEATURE_ID,
        add_count: int = 1,
        expired: str = "",
        for_key: str | None = None,
        state: str = "new",
        code: str | None = None,
    ) -> str:
        code = code or self.ids.coupon()
        self.coupons[code] = {
            "code": code,
            "product_id": int(product_id),
            "feature_id": int(feature_id),
            "add_count": int(add_count),
            "expired": expired,
            "for_key": for_key,
            "state": state,
            "used_by": None,
        }
        self.save()
        return code

    def seats(self, key: str) -> list[dict[str, Any]]:
        c = self.companies.get(key)
        if c is None:
            raise KeyError(key)
        out = []
        for p in c["products"]:
            for f in p["features"]:
                for machine, info in f["seats"].items():
                    out.append(
                        {
                            "machine_id": machine,
                            "pbx": info.get("pbx", ""),
                            "feature": f["name"],
                            "feature_id": f["id"],
                            "product_id": p["id"],
                            "captured_at": info.get("captured_at"),
                        }
                    )
        return out

    def free_seat(self, key: str, machine_id: str) -> int:
        c = self.companies.get(key)
        if c is None:
            raise KeyError(key)
        n = 0
        for p in c["products"]:
            for f in p["features"]:
                if f["seats"].pop(machine_id, None) is not None:
                    n += 1
        if n:
            self.save()
        return n

    # ---- library-facing operations ----------------------------------------------------------
    def _company(self, key: str) -> dict[str, Any]:
        c = self.companies.get(key)
        if c is None:
            raise LicError.of(2026)
        if c.get("revoked"):
            raise LicError.of(2009)
        return c

    def _base(self, c: dict[str, Any]) -> dict[str, Any] | None:
        for p in c["products"]:
            for f in p["features"]:
                if f["id"] == BASE_FEATURE_ID:
                    return f
        return None

    def _expired(self, p: dict[str, Any]) -> bool:
        exp = p.get("expired") or ""
        return bool(exp) and exp < ymd(self.now())

    def holds_base_seat(self, key: str, machine_id: str) -> bool:
        c = self.companies.get(key)
        if not c:
            return False
        base = self._base(c)
        return bool(base and machine_id in base["seats"])

    def license_info(self, key: str, machine_id: str) -> dict[str, Any]:
        """The decoded XML-shaped object (json_encode of a SimpleXMLElement)."""
        c = self._company(key)
        base = self._base(c)
        if base is None or machine_id not in base["seats"]:
            raise LicError.of(2008)
        products = []
        for p in c["products"]:
            feats = [
                {
                    "@attributes": {
                        "name": f["name"],
                        "count": str(f["count"]),
                        "counteach": str(f["counteach"]),
                        "captured": str(len(f["seats"])),
                    }
                }
                for f in p["features"]
            ]
            prod: dict[str, Any] = {
                "@attributes": {"name": p["name"], "expired": p["expired"], "trial": "1" if p["trial"] else "0"}
            }
            if feats:
                prod["feature"] = feats[0] if len(feats) == 1 else feats
            products.append(prod)
        info: dict[str, Any] = {
            "@attributes": {
                "key": key,
                "companyname": c["companyname"],
                "contact": c["contact"],
                "email": c["email"],
                "tel": c["tel"],
            }
        }
        if products:
            info["product"] = products[0] if len(products) == 1 else products
        return info

    def change_key(self, key: str, machine_id: str, pbx: str) -> None:
        """A PBX applies ``key``: capture a base seat for its machine (2008 when full)."""
        c = self._company(key)
        base = self._base(c)
        if base is None:
            raise LicError.of(2008)
        if machine_id in base["seats"]:
            return
        if len(base["seats"]) >= base["count"]:
            raise LicError.of(2008)
        base["seats"][machine_id] = {"pbx": pbx, "captured_at": self.now()}
        self.save()

    def release(self, key: str, machine_id: str) -> None:
        if key in self.companies:
            self.free_seat(key, machine_id)

    def feature_available(self, key: str, machine_id: str, feature_id: int) -> None:
        c = self._company(key)
        base = self._base(c)
        if base is None or machine_id not in base["seats"]:
            raise LicError.of(2008)
        for p in c["products"]:
            for f in p["features"]:
                if f["id"] == feature_id and machine_id in f["seats"]:
                    if self._expired(p):
                        raise LicError.of(2011)
                    return
        # not captured by this machine: an expired product still reports 2011
        for p in c["products"]:
            for f in p["features"]:
                if f["id"] == feature_id and self._expired(p):
                    raise LicError.of(2011)
        raise LicError.of(2008)

    def capture_feature(self, key: str, machine_id: str, pbx: str, feature_id: int) -> None:
        c = self._company(key)
        for p in c["products"]:
            for f in p["features"]:
                if f["id"] != feature_id:
                    continue
                if self._expired(p):
                    raise LicError.of(2011)
                if machine_id in f["seats"]:
                    return
                if len(f["seats"]) >= f["count"]:
                    raise LicError.of(2008)
                f["seats"][machine_id] = {"pbx": pbx, "captured_at": self.now()}
                self.save()
                return
        raise LicError.of(2008)

    def add_trial(self, key: str, product_id: int) -> None:
        """Trial of a catalogue product: once per company; 30 days, count 1 per feature."""
        c = self._company(key)
        if any(p["id"] == product_id for p in c["products"]):
            return
        info = _product_for(product_id)
        if info is None or not info.get("feature_id"):
            return
        c["products"].append(
            {
                "id": product_id,
                "name": info["name"],
                "trial": True,
                "expired": ymd(self.now() + TRIAL_DAYS * 86400),
                "features": [{"id": info["feature_id"], "name": info["name"], "count": 1, "counteach": 1, "seats": {}}],
            }
        )
        self.save()

    def activate_coupon(self, key: str, coupon: str) -> None:
        c = self.companies.get(key)
        if c is None or c.get("revoked"):
            raise LicError.of(2037)
        cp = self.coupons.get(coupon.strip())
        if cp is None:
            raise LicError.of(2040)
        if cp["state"] == "blocked":
            raise LicError.of(2057)
        if cp["state"] == "used":
            raise LicError.of(2041)
        if cp.get("for_key") and cp["for_key"] != key:
            raise LicError.of(2037)
        target = None
        for p in c["products"]:
            if p["id"] == cp["product_id"]:
                target = p
        if target is None:
            info = _product_for(cp["product_id"]) or {"name": f"Product {cp['product_id']}"}
            target = {
                "id": cp["product_id"],
                "name": info["name"],
                "expired": cp.get("expired") or "",
                "trial": False,
                "features": [],
            }
            c["products"].append(target)
        else:
            target["trial"] = False
            target["expired"] = cp.get("expired") or ""
        feat = next((f for f in target["features"] if f["id"] == cp["feature_id"]), None)
        if feat is None:
            feat = {"id": cp["feature_id"], "name": target["name"], "count": 0, "counteach": 1, "seats": {}}
            target["features"].append(feat)
        feat["count"] += cp["add_count"]
        cp["state"] = "used"
        cp["used_by"] = key
        self.save()

    def trial(self, fields: dict[str, Any], machine_id: str, pbx: str) -> str:
        companyname = str(fields.get("companyname") or "").strip()
        email = str(fields.get("email") or "").strip()
        contact = str(fields.get("contact") or "").strip()
        if not companyname or not email or not contact:
            raise LicError(0, texts.RAW_TRIAL_FIELDS)
        known = self.trial_machines.get(machine_id)
        if known is not None and known.lower() != email.lower():
            raise LicError.of(2051)
        existing = [c for c in self.companies.values() if c["email"].lower() == email.lower()]
        for c in existing:
            if c["companyname"] != companyname:
                raise LicError.of(2022)
        if existing:
            key = existing[0]["key"]
        else:
            key = self.create_company(
                companyname,
                email=email,
                contact=contact,
                tel=str(fields.get("telefone") or fields.get("tel") or ""),
                inn=str(fields.get("inn") or ""),
            )
        self.trial_machines[machine_id] = email
        try:
            self.change_key(key, machine_id, pbx)
        except LicError:
            pass  # key is issued even if its seats are full; binding then fails on use
        self.save()
        return key

    def record_metrics(self, key: str, pbx: str, fields: dict[str, Any]) -> None:
        self.metrics.append({"key_tail": key[-5:], "pbx": pbx, "at": self.now(), **fields})
        self.metrics = self.metrics[-200:]
        self.save()

    def public_company(self, key: str) -> dict[str, Any]:
        return copy.deepcopy(self.companies[key])


def now_ts() -> float:
    return time.time()
