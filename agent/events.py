"""The audit event vocabulary, shared by the audit log and every stage that records (see
docs/audit.md). A module of its own, outside both agent/audit and agent/policy, so that the
policy stores can name events without the policy package depending on the audit package."""
from __future__ import annotations

DECISION = "decision"                    # read_id, destination, allowed, rule_id, reason, purposes, hit, dest_class
READ_ACCEPTED = "read.accepted"          # read_id, camera_id, hit, purposes (hit purposes);
#                                          outbox: + decisions (list, see records.expand)
POLICY_INSTALLED = "policy.installed"    # version, digest, signer, agency, source, expires_at
POLICY_REFUSED = "policy.refused"        # reason, detail, source
POLICY_EXPIRED = "policy.expired"        # version, digest
POLICY_FLOOR_INCONSISTENT = "policy.floor_inconsistent"  # highwater_file, audit_floor, floor, detail
KEYS_LOADED = "keys.loaded"              # trusted (key ids), hmac (destination -> key id), source
PLAINTEXT_ALLOWED = "delivery.plaintext_allowed"  # the device opted in to plain MQTT to loopback
HOTLIST_INSTALLED = "hotlist.installed"  # list_id, version, purpose, source, plates, digest, signer
HOTLIST_REFUSED = "hotlist.refused"      # reason, detail, source
HOTLIST_STALE = "hotlist.stale"          # list_id, version, issued_at, max_staleness_s
RETENTION_DELETED = "retention.deleted"  # count, hits, oldest_age_s, where
DELIVERY_PURGED = "delivery.purged"      # read_id, destination, rule_id, reason
DELIVERY_REFUSED = "delivery.refused"    # read_id, destination, reason
DELIVERY_SENT = "delivery.sent"          # read_id, destination, purposes; or batched:
#                                          destination, read_ids, seqs, purposes, policy_versions
OUTBOX_EVICTED = "outbox.evicted"        # read_id, destination, reason
OUTBOX_REFUSED = "outbox.refused"        # read_id, reason (full, write_failed), bytes, max_bytes
OUTBOX_FULL = "outbox.full"              # bytes, max_bytes, reason (alarm)
READ_LOST = "read.lost"                  # read_ids, count, reason, audit_seqs (found at restart:
#                                          audited as accepted, but the outbox commit never happened)
CONFIG_CHANGED = "config.changed"        # key, old_digest, new_digest, source (never secret values)
# The technician's serial console (agent/console): never a password, a secret value or plate text.
CONSOLE_PASSWORD_SET = "console.password_set"      # technician, how (first, changed)
CONSOLE_LOGIN = "console.login"                    # technician
CONSOLE_LOGIN_FAILED = "console.login_failed"      # technician, failures, locked_for_s
CONSOLE_LOGOUT = "console.logout"                  # technician, reason (command, idle, line_lost)
CONSOLE_REFUSED = "console.refused"                # technician, command, key, reason
CONSOLE_CONFIG_APPLIED = "console.config_applied"  # technician, keys, old_digest, new_digest, rollback
CONSOLE_TIME_SET = "console.time_set"              # technician, old, new
CONSOLE_RESTART = "console.restart"                # technician
CONSOLE_EVENTS = frozenset({
    CONSOLE_PASSWORD_SET, CONSOLE_LOGIN, CONSOLE_LOGIN_FAILED, CONSOLE_LOGOUT, CONSOLE_REFUSED,
    CONSOLE_CONFIG_APPLIED, CONSOLE_TIME_SET, CONSOLE_RESTART,
})
# Written by the audit log itself.
CHECKPOINT = "checkpoint"                # count, head, key_id, signature
AUDIT_RECOVERED = "audit.recovered"      # dropped_bytes (a partial line cut after a crash)
AUDIT_TRUNCATION_DETECTED = "audit.truncation_detected"  # head_seq, log_seq

EVENTS = frozenset({
    DECISION, READ_ACCEPTED, POLICY_INSTALLED, POLICY_REFUSED, POLICY_EXPIRED, POLICY_FLOOR_INCONSISTENT,
    KEYS_LOADED, PLAINTEXT_ALLOWED, HOTLIST_INSTALLED,
    HOTLIST_REFUSED, HOTLIST_STALE, RETENTION_DELETED, DELIVERY_PURGED, DELIVERY_REFUSED,
    DELIVERY_SENT, OUTBOX_EVICTED, OUTBOX_REFUSED, OUTBOX_FULL, READ_LOST, CONFIG_CHANGED, CHECKPOINT, AUDIT_RECOVERED,
    AUDIT_TRUNCATION_DETECTED,
}) | CONSOLE_EVENTS
