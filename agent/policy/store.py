"""The unit's active policy: install, persist, survive reboots, never roll back.

State in ``state_dir``:
- ``policy.bundle``: the last good signed bundle, byte for byte (atomic replace).
- ``policy.highwater``: the highest policy version ever installed.

The rollback floor is the highest of: the active version, the high-water file, and the
highest version the audit log records as installed (read once, at start). So deleting or
rewriting the high-water file does not lower it; a disagreement between the two is audited
and the higher one wins. With no evidence at all (no high-water file, no install in the log,
or a log that shows signs of having been cut), a persisted bundle is not trusted: the unit
shares nothing until a bundle arrives. docs/policy.md states which attacker this covers.

Every install and every refusal is audited. Subscribers are told after each change (install,
or expiry noticed by ``active()``), outside the lock, so the outbox can re-check its backlog.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.atomic import write_atomic
from agent import events
from agent.policy.bundle import load_bundle, policy_digest, rollback_floor
from agent.policy.errors import PolicyError
from agent.policy.model import Policy
from agent.policy.schema import format_time
from agent.policy.signing import peek_payload

log = logging.getLogger(__name__)

BUNDLE_FILE = "policy.bundle"
HIGHWATER_FILE = "policy.highwater"


class PolicyStore:
    def __init__(self, state_dir: Path, trusted_keys: Mapping[str, Ed25519PublicKey], audit, *,
                 allow_plaintext_loopback: bool = False) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._trusted = dict(trusted_keys)
        self._audit = audit
        self.allow_plaintext_loopback = allow_plaintext_loopback
        self._lock = threading.RLock()
        self._policy: Policy | None = None
        self._expired_reported: str | None = None
        self._subscribers: list[Callable[[Policy | None], None]] = []
        self._audit_floor, self._audit_digest, self._floor_unknown = self._check_floor()

    def set_trusted_keys(self, trusted_keys: Mapping[str, Ed25519PublicKey]) -> None:
        """Replace the department keys later installs are checked against (SIGHUP key
        rotation). The active policy stays: it was verified when it was installed."""
        with self._lock:
            self._trusted = dict(trusted_keys)

    # --- rollback floor -----------------------------------------------------------------

    def _check_floor(self) -> tuple[int, str | None, str | None]:
        """(the audit log's floor and its digest, why no floor can be trusted or None),
        auditing disagreements.

        Run once, at start, before anything is installed: from then on the store's own
        installs keep the high-water file and the log in step.
        """
        audit_path = getattr(self._audit, "path", None)
        if audit_path is None:       # an audit sink with no file (unit tests of other parts)
            return 0, None, None
        audit_floor, digest = highest_installed_policy(Path(audit_path))
        hw_path = self.state_dir / HIGHWATER_FILE
        hw = self.highwater() if hw_path.exists() else None
        tampering = getattr(self._audit, "tampering", None)
        if (hw or 0) != audit_floor:
            floor = max(hw or 0, audit_floor)
            detail = (f"{HIGHWATER_FILE} {'missing' if hw is None else f'says version {hw}'}, the "
                      f"audit log records version {audit_floor or 'none'} installed; using {floor}")
            log.warning("policy rollback floor inconsistent %s", detail)
            self._audit.record(events.POLICY_FLOOR_INCONSISTENT, highwater_file=hw,
                               audit_floor=audit_floor, floor=floor, detail=detail)
            self._audit.flush()
            if audit_floor > (hw or 0):
                try:       # put the file back, so the next start agrees again
                    write_atomic(hw_path, json.dumps({"version": audit_floor, "digest": digest}).encode()
                                 + b"\n")
                except OSError as exc:
                    log.error("cannot restore %s: %s", hw_path, exc)
        unknown = None
        if tampering:
            unknown = f"the audit log may have been cut ({tampering})"
        elif hw is None and not audit_floor:
            unknown = (f"neither {HIGHWATER_FILE} nor the audit log records an installed version")
        return audit_floor, digest, unknown

    def _sets_the_floor(self, data: bytes) -> bool:
        """Whether `data` is (by payload digest, not yet verified) the very bundle whose
        install set the floor: offering it again is not a rollback (e.g. the config names it
        after a planted older bundle was refused)."""
        try:
            digest = policy_digest(peek_payload(bytes(data)))
        except PolicyError:
            return False
        recorded = {self._audit_digest}
        try:
            recorded.add(json.loads((self.state_dir / HIGHWATER_FILE).read_text()).get("digest"))
        except (OSError, ValueError, AttributeError):
            pass
        return digest in recorded - {None}

    # --- state files ------------------------------------------------------------------

    def highwater(self) -> int:
        """Highest version ever installed on this unit (0 if none)."""
        path = self.state_dir / HIGHWATER_FILE
        try:
            return int(json.loads(path.read_text())["version"])
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError):
            # Unreadable: refuse everything until an operator looks, rather than allow rollback.
            log.error("policy high-water file unreadable path=%s; refusing installs", path)
            return 2**62

    def _persisted_bytes(self) -> bytes | None:
        try:
            return (self.state_dir / BUNDLE_FILE).read_bytes()
        except OSError:
            return None

    def _persist(self, data: bytes, policy: Policy) -> None:
        write_atomic(self.state_dir / BUNDLE_FILE, data)
        write_atomic(self.state_dir / HIGHWATER_FILE,
                     json.dumps({"version": policy.version, "digest": policy.digest}).encode() + b"\n")

    # --- API ----------------------------------------------------------------------------

    def active(self, now: float) -> Policy | None:
        """The policy to decide with now, or None (none installed, expired, not yet valid)."""
        notify = False
        with self._lock:
            policy = self._policy
            if policy is None:
                return None
            if policy.not_before <= now < policy.expires_at:
                return policy
            if now >= policy.expires_at and self._expired_reported != policy.digest:
                self._expired_reported = policy.digest
                log.warning("policy expired version=%d expires_at=%s", policy.version,
                            format_time(policy.expires_at))
                self._audit.record(events.POLICY_EXPIRED, version=policy.version, digest=policy.digest)
                notify = True
        if notify:
            self._notify(None)
        return None

    def install(self, data: bytes, now: float, source: str) -> Policy:
        """Verify, persist and activate a bundle; raises PolicyError (audited) if refused."""
        with self._lock:
            current = self._policy
            same = self._persisted_bytes() == bytes(data)
            if same and current is not None and current.not_before <= now < current.expires_at:
                # The very bundle already active (e.g. a retained MQTT message re-delivered on
                # reconnect): nothing changes, so nothing to refuse or audit.
                log.debug("policy unchanged version=%d source=%s", current.version, source)
                return current
            floor = rollback_floor(current.version if current else 0, self.highwater(),
                                   self._audit_floor,
                                   reoffer_of_persisted=current is None and (same or self._sets_the_floor(data)))
            try:
                policy = load_bundle(data, self._trusted, now, floor,
                                     allow_plaintext_loopback=self.allow_plaintext_loopback)
                self._persist(data, policy)
            except PolicyError as exc:
                self._refused(exc, source)
                raise
            except OSError as exc:
                err = PolicyError("io", f"cannot persist policy in {self.state_dir}: {exc}")
                self._refused(err, source)
                raise err from exc
            self._policy = policy
            self._expired_reported = None
            self._floor_unknown = None     # a bundle arrived: the persisted one is its own now
            self._installed(policy, source)
        self._notify(policy)
        return policy

    def load_persisted(self, now: float) -> Policy | None:
        """At start-up: re-verify the persisted bundle; keep it only if still valid."""
        path = self.state_dir / BUNDLE_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            log.info("no persisted policy path=%s; sharing nothing until one is installed", path)
            return None
        with self._lock:
            try:
                if self._floor_unknown is not None:
                    raise PolicyError("rollback", f"persisted policy not trusted: {self._floor_unknown}, "
                                                  f"so it cannot be told from an older bundle put in its "
                                                  f"place; sharing nothing until a bundle arrives")
                policy = load_bundle(data, self._trusted, now, None,
                                     allow_plaintext_loopback=self.allow_plaintext_loopback)
                hw = max(self.highwater(), self._audit_floor)
                if policy.version < hw:
                    raise PolicyError("rollback", f"persisted policy version {policy.version} is older "
                                                  f"than version {hw} already installed")
            except PolicyError as exc:
                self._refused(exc, f"persisted:{path}")
                return None
            self._policy = policy
            self._installed(policy, f"persisted:{path}")
        self._notify(policy)
        return policy

    def subscribe(self, callback: Callable[[Policy | None], None]) -> None:
        with self._lock:
            self._subscribers.append(callback)

    # --- helpers ------------------------------------------------------------------------

    def _installed(self, policy: Policy, source: str) -> None:
        log.info("policy installed version=%d digest=%s signer=%s source=%s", policy.version,
                 policy.digest[:16], policy.signer_key_id, source)
        self._audit.record(events.POLICY_INSTALLED, version=policy.version, digest=policy.digest,
                           signer=policy.signer_key_id, agency=policy.agency, source=source,
                           expires_at=format_time(policy.expires_at),
                           destinations=[d.id for d in policy.destinations])
        self._audit.flush()

    def _refused(self, exc: PolicyError, source: str) -> None:
        log.warning("policy refused reason=%s source=%s detail=%s", exc.reason, source, exc.detail)
        self._audit.record(events.POLICY_REFUSED, reason=exc.reason, detail=exc.detail[:500], source=source)
        self._audit.flush()

    def _notify(self, policy: Policy | None) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(policy)
            except Exception:  # a subscriber's bug must not undo an install
                log.exception("policy subscriber failed callback=%r", callback)


_INSTALLED_MARK = b'"event":"%s"' % events.POLICY_INSTALLED.encode()


def highest_installed_policy(path: Path) -> tuple[int, str | None]:
    """(version, digest) of the highest policy version the log says was installed; (0, None)
    when the log is missing or records no install.

    The policy store's second rollback floor (docs/policy.md, threat model): the log is
    append-only and hash-chained, so removing an install record from it shows as tampering,
    while an added one can only raise the floor (refuse more). Only lines that name the
    event are parsed, so a long log costs one sequential read.
    """
    best, digest = 0, None
    try:
        fh = open(path, "rb")
    except OSError:
        return best, digest
    with fh:
        for line in fh:
            if _INSTALLED_MARK not in line:
                continue
            try:
                record = json.loads(line)
                fields = record["fields"]
                version = int(fields["version"]) if record["event"] == events.POLICY_INSTALLED else 0
            except (ValueError, KeyError, TypeError):
                continue
            if version > best:
                best, digest = version, fields.get("digest")
    return best, digest
