"""Signed, versioned hotlists and the plate matcher.

A hotlist bundle uses the same envelope and department keys as a policy (kind "hotlist", so
one can never pass for the other). Its payload::

    {"schema": "plategate.hotlist/1", "list_id": "ct-stolen", "version": 12,
     "source": "CT DESPP NCIC extract", "purpose": "stolen_vehicle",
     "issued_at": "2026-11-24T06:00:00Z", "max_staleness_hours": 24,
     "plates": ["ABC1234", "7XYZ12"]}

A list older than its max staleness stops matching (a stale stolen-car list causes stops of
cars long since recovered) and is audited and logged as an alert once per list version.
Versions are per list id and never go back (high-water persisted like the policy's).
"""
from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.atomic import write_atomic
from agent import events
from agent.policy.bundle import rollback_floor
from agent.policy.errors import PolicyError
from agent.policy.model import PURPOSES
from agent.policy.plates import normalise_plate
from agent.policy.schema import ID_RE, Errors, check_object, format_time, get_enum, get_number, get_str, get_time
from agent.policy.signing import canonical_json, open_envelope, peek_payload, seal
from agent.reads import HotlistHit

log = logging.getLogger(__name__)

HOTLIST_SCHEMA = "plategate.hotlist/1"
PLATE_RE = re.compile(r"^[A-Z0-9]{1,12}$")
CLOCK_SKEW_S = 300.0  # a list "issued" this far in the future is still accepted


@dataclass(frozen=True)
class Hotlist:
    list_id: str
    version: int
    source: str
    purpose: str
    issued_at: float
    max_staleness_s: float
    plates: frozenset[str]             # normalised
    signer_key_id: str
    digest: str

    def stale(self, now: float) -> bool:
        return now >= self.issued_at + self.max_staleness_s


def hotlist_from_dict(doc: Any, *, signer_key_id: str, digest: str) -> Hotlist:
    errs = Errors()
    obj = check_object(doc, "", {"schema", "list_id", "version", "source", "purpose", "issued_at",
                                 "max_staleness_hours", "plates"}, {"comment"}, errs)
    if obj is None:
        errs.raise_if_any("hotlist")
    if "schema" in obj and obj["schema"] != HOTLIST_SCHEMA:
        errs.add("schema", f"{obj['schema']!r} is not {HOTLIST_SCHEMA!r}")
    list_id = get_str(obj, "list_id", "", errs, pattern=ID_RE)
    version = get_number(obj, "version", "", errs, minimum=1, integer=True)
    source = get_str(obj, "source", "", errs)
    purpose = get_enum(obj, "purpose", "", PURPOSES, errs)
    issued = get_time(obj, "issued_at", "", errs)
    staleness = get_number(obj, "max_staleness_hours", "", errs, minimum=0, exclusive_min=True)
    plates: set[str] = set()
    raw = obj.get("plates", [])
    if not isinstance(raw, list):
        errs.add("plates", "expected a list")
        raw = []
    for i, item in enumerate(raw):
        norm = normalise_plate(item) if isinstance(item, str) else None
        if norm is None or not PLATE_RE.match(norm):
            errs.add(f"plates[{i}]", f"{item!r} is not a plate (1-12 letters/digits after removing "
                                     f"spaces and dashes)")
        else:
            plates.add(norm)
    errs.raise_if_any("hotlist")
    return Hotlist(list_id=list_id, version=int(version), source=source, purpose=purpose,
                   issued_at=issued, max_staleness_s=float(staleness) * 3600.0,
                   plates=frozenset(plates), signer_key_id=signer_key_id, digest=digest)


def sign_hotlist(hotlist_json: dict, private_key: Ed25519PrivateKey, key_id: str | None = None,
                 *, validate: bool = True) -> bytes:
    if validate:
        hotlist_from_dict(hotlist_json, signer_key_id="", digest="")
    return seal("hotlist", canonical_json(hotlist_json), private_key, key_id)


def load_hotlist(data: bytes, trusted_keys: Mapping[str, Ed25519PublicKey], now: float,
                 active_version: int | None) -> Hotlist:
    """Verify a hotlist bundle; refuses like load_bundle (rollback, stale on arrival, ...)."""
    opened = open_envelope(data, "hotlist", trusted_keys)
    try:
        doc = json.loads(opened.payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PolicyError("invalid_json", f"hotlist payload is not valid JSON ({exc})") from exc
    hotlist = hotlist_from_dict(doc, signer_key_id=opened.key_id, digest=opened.digest)
    if active_version is not None and hotlist.version <= active_version:
        raise PolicyError("rollback", f"hotlist {hotlist.list_id} version {hotlist.version} is not newer "
                                      f"than version {active_version} already installed")
    if hotlist.issued_at > now + CLOCK_SKEW_S:
        raise PolicyError("not_yet_valid", f"hotlist {hotlist.list_id} is issued in the future "
                                           f"({format_time(hotlist.issued_at)})")
    if hotlist.stale(now):
        raise PolicyError("expired", f"hotlist {hotlist.list_id} version {hotlist.version} was already "
                                     f"stale on arrival (issued {format_time(hotlist.issued_at)})")
    return hotlist


class HotlistStore:
    """Installed hotlists (one per list id), persisted in ``state_dir/hotlists``."""

    def __init__(self, state_dir: Path, trusted_keys: Mapping[str, Ed25519PublicKey], audit) -> None:
        self.dir = Path(state_dir) / "hotlists"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._trusted = dict(trusted_keys)
        self._audit = audit
        self._lock = threading.Lock()
        self._lists: dict[str, Hotlist] = {}
        self._stale_reported: set[tuple[str, int]] = set()

    def set_trusted_keys(self, trusted_keys: Mapping[str, Ed25519PublicKey]) -> None:
        """Replace the signer keys later installs are checked against (SIGHUP key rotation);
        hotlists already installed stay until replaced or stale."""
        with self._lock:
            self._trusted = dict(trusted_keys)

    def _highwater(self) -> dict[str, int]:
        path = self.dir / "highwater.json"
        try:
            return {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, AttributeError, TypeError):
            log.error("hotlist high-water file unreadable path=%s; refusing installs", path)
            return {"*": 2**62}

    def install(self, data: bytes, now: float, source: str) -> Hotlist:
        with self._lock:
            hw = self._highwater()
            try:
                opened_id = self._peek_list_id(data)
                current = self._lists.get(opened_id)
                same = self._persisted_bytes(opened_id) == bytes(data)
                if same and current is not None and not current.stale(now):
                    # Already installed (a re-delivered retained message): nothing changes.
                    log.debug("hotlist unchanged list_id=%s version=%d source=%s", opened_id,
                              current.version, source)
                    return current
                floor = rollback_floor(hw.get(opened_id, 0), hw.get("*", 0), current.version if current else 0,
                                       reoffer_of_persisted=same and current is None)
                hotlist = load_hotlist(data, self._trusted, now, floor)
                write_atomic(self.dir / f"{hotlist.list_id}.bundle", data)
                hw[hotlist.list_id] = hotlist.version
                write_atomic(self.dir / "highwater.json", json.dumps(hw, sort_keys=True).encode() + b"\n")
            except PolicyError as exc:
                self._refused(exc, source)
                raise
            except OSError as exc:
                err = PolicyError("io", f"cannot persist hotlist in {self.dir}: {exc}")
                self._refused(err, source)
                raise err from exc
            self._lists[hotlist.list_id] = hotlist
            self._installed(hotlist, source)
            return hotlist

    def _persisted_bytes(self, list_id: str) -> bytes | None:
        if not list_id:
            return None
        try:
            return (self.dir / f"{list_id}.bundle").read_bytes()
        except OSError:
            return None

    def _peek_list_id(self, data: bytes) -> str:
        # Only to pick the rollback floor; load_hotlist verifies the signature before use.
        try:
            list_id = json.loads(peek_payload(data))["list_id"]
        except (PolicyError, ValueError, KeyError, TypeError):
            return ""
        return list_id if isinstance(list_id, str) and ID_RE.match(list_id) else ""

    def load_persisted(self, now: float) -> list[Hotlist]:
        """At start-up: re-verify each persisted list; stale ones load but do not match."""
        loaded = []
        hw = self._highwater()
        for path in sorted(self.dir.glob("*.bundle")):
            try:
                hotlist = self._load_even_if_stale(path.read_bytes(), now)
                if hotlist.version < hw.get(hotlist.list_id, 0):
                    raise PolicyError("rollback", f"persisted hotlist {hotlist.list_id} version "
                                                  f"{hotlist.version} is older than the high-water mark")
            except (PolicyError, OSError) as exc:
                err = exc if isinstance(exc, PolicyError) else PolicyError("io", str(exc))
                self._refused(err, f"persisted:{path}")
                continue
            with self._lock:
                self._lists[hotlist.list_id] = hotlist
            self._installed(hotlist, f"persisted:{path}")
            loaded.append(hotlist)
        self.stale(now)
        return loaded

    def _load_even_if_stale(self, data: bytes, now: float) -> Hotlist:
        opened = open_envelope(data, "hotlist", self._trusted)
        try:
            doc = json.loads(opened.payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PolicyError("invalid_json", f"hotlist payload is not valid JSON ({exc})") from exc
        return hotlist_from_dict(doc, signer_key_id=opened.key_id, digest=opened.digest)

    def match(self, plate: str, now: float) -> tuple[HotlistHit, ...]:
        """Hits for ``plate`` on every installed, non-stale list."""
        norm = normalise_plate(plate)
        hits = []
        newly_stale = []
        for hotlist in list(self._lists.values()):
            if hotlist.stale(now):
                if (hotlist.list_id, hotlist.version) not in self._stale_reported:
                    newly_stale.append(hotlist)
                continue
            if norm in hotlist.plates:
                hits.append(HotlistHit(hotlist.list_id, hotlist.version, hotlist.purpose, hotlist.source))
        if newly_stale:
            self._report_stale(newly_stale)
        return tuple(hits)

    def stale(self, now: float) -> list[str]:
        """Ids of installed lists past their max staleness (alerted once per version)."""
        stale = [h for h in list(self._lists.values()) if h.stale(now)]
        self._report_stale([h for h in stale if (h.list_id, h.version) not in self._stale_reported])
        return sorted(h.list_id for h in stale)

    def lists(self) -> list[Hotlist]:
        return sorted(self._lists.values(), key=lambda h: h.list_id)

    def _report_stale(self, lists: list[Hotlist]) -> None:
        for hotlist in lists:
            with self._lock:
                key = (hotlist.list_id, hotlist.version)
                if key in self._stale_reported:
                    continue
                self._stale_reported.add(key)
            log.error("ALERT hotlist stale list_id=%s version=%d issued_at=%s max_staleness_h=%.1f; "
                      "it no longer matches", hotlist.list_id, hotlist.version,
                      format_time(hotlist.issued_at), hotlist.max_staleness_s / 3600)
            self._audit.record(events.HOTLIST_STALE, list_id=hotlist.list_id, version=hotlist.version,
                               issued_at=format_time(hotlist.issued_at),
                               max_staleness_s=hotlist.max_staleness_s)

    def _installed(self, hotlist: Hotlist, source: str) -> None:
        log.info("hotlist installed list_id=%s version=%d plates=%d purpose=%s source=%s",
                 hotlist.list_id, hotlist.version, len(hotlist.plates), hotlist.purpose, source)
        self._audit.record(events.HOTLIST_INSTALLED, list_id=hotlist.list_id, version=hotlist.version,
                           purpose=hotlist.purpose, source=source, plates=len(hotlist.plates),
                           digest=hotlist.digest, signer=hotlist.signer_key_id)
        self._audit.flush()

    def _refused(self, exc: PolicyError, source: str) -> None:
        log.warning("hotlist refused reason=%s source=%s detail=%s", exc.reason, source, exc.detail)
        self._audit.record(events.HOTLIST_REFUSED, reason=exc.reason, detail=exc.detail[:500], source=source)
        self._audit.flush()
