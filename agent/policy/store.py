"""The unit's active policy: install, persist, survive reboots, never roll back.

State in ``state_dir``:
- ``policy.bundle``: the last good signed bundle, byte for byte (atomic replace).
- ``policy.highwater``: the highest policy version ever installed. Rollback is checked against
  max(active version, high-water), so removing the active bundle or rebooting cannot be used
  to bring an older (wider) policy back. Someone who can rewrite these files can still wipe
  them, which leaves the unit with no policy: sharing nothing (fail closed), not sharing more.

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
from agent.policy.bundle import load_bundle, rollback_floor
from agent.policy.errors import PolicyError
from agent.policy.model import Policy
from agent.policy.schema import format_time

log = logging.getLogger(__name__)

BUNDLE_FILE = "policy.bundle"
HIGHWATER_FILE = "policy.highwater"


class PolicyStore:
    def __init__(self, state_dir: Path, trusted_keys: Mapping[str, Ed25519PublicKey], audit) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._trusted = dict(trusted_keys)
        self._audit = audit
        self._lock = threading.RLock()
        self._policy: Policy | None = None
        self._expired_reported: str | None = None
        self._subscribers: list[Callable[[Policy | None], None]] = []

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
                                   reoffer_of_persisted=same and current is None)
            try:
                policy = load_bundle(data, self._trusted, now, floor)
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
                policy = load_bundle(data, self._trusted, now, None)
                hw = self.highwater()
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
