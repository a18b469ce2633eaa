"""What the agent answers on its control socket: the console's view of a running pipeline.

Every operation is read-only on the pipeline except the four that go through the same
code paths as the rest of the agent: `policy.install` and `hotlist.install` (the policy
and hotlist stores' own signature, expiry and rollback checks), `reload` and `restart`
(the agent's own signal handling), and `audit.record`, which accepts only the console's
own events with a fixed set of plain fields. None of them returns plate text: stored
reads are not reachable from here at all, and camera tests report plates seen live only.
"""
from __future__ import annotations

import base64
import collections
import dataclasses
import json
import logging
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

from agent import events
from agent.audit.records import expand
from agent.control.snapshot import brightness, encode_snapshot, focus_score, privacy_masks
from agent.control.target import ConsoleTarget
from agent.delivery.mqtt_link import DestinationCredentials, IdentityError, LinkError, MqttLink
from agent.policy.errors import PolicyError
from agent.policy.model import Transport
from agent.policy.schema import format_time
from agent.vision.recognizer import is_confident

log = logging.getLogger(__name__)

AUDIT_TAIL_BYTES = 512 * 1024
MAX_TEST_S = 30.0
# Field names a console audit record may carry; values are plain strings, numbers or lists of strings.
CONSOLE_FIELDS = frozenset({"technician", "command", "key", "keys", "reason", "how", "failures",
                            "locked_for_s", "old_digest", "new_digest", "rollback", "old", "new", "detail",
                            "console_time"})
# Audit fields shown by `audit tail`: never read ids' plates, never secrets (none are stored anyway).
TAIL_FIELDS = ("reason", "rule_id", "destination", "version", "list_id", "source", "technician",
               "keys", "key", "command", "allowed", "count")


class AgentOps:
    def __init__(self, pipeline: ConsoleTarget, log_lines: Callable[[int], list[str]]):
        self.pipeline = pipeline
        self.log_lines = log_lines
        self._fps_sample = (time.monotonic(), pipeline.capture.frames_read)
        self._lock = threading.Lock()

    def handlers(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {
            "ping": self.ping, "status": self.status, "reload": self.reload, "restart": self.restart,
            "audit.record": self.audit_record, "audit.tail": self.audit_tail, "log.tail": self.log_tail,
            "policy.show": self.policy_show, "policy.install": self.policy_install,
            "hotlist.install": self.hotlist_install, "camera.snapshot": self.camera_snapshot,
            "camera.test": self.camera_test, "mqtt.test": self.mqtt_test,
        }

    # --- status ---------------------------------------------------------------------------

    def ping(self, request: dict) -> dict:
        return {"unit_id": self.pipeline.config.unit.id}

    def status(self, request: dict) -> dict:
        p = self.pipeline
        stats = p.stats()
        now = time.time()
        broken = [s.name for s in p.stages if s.fatal.is_set()]
        policy = p.policies.active(now)
        delivery = stats.get("delivery", {})
        return {
            "health": "failing: " + ", ".join(broken) if broken else "ok",
            "unit_id": p.config.unit.id, "camera_id": p.config.unit.camera_id,
            "uptime_s": round(now - p.started_at, 1),
            "fps": self._recent_fps(),
            "frames": {k: stats[k] for k in ("frames_read", "frames_dropped", "frames_corrupt",
                                             "frames_recognized")},
            "reads_accepted": stats["reads_accepted"],
            "queue_depth": {"frames": p.capture.frames.qsize(), **stats["queue_depth"]},
            "destinations": {d: {"connected": s.get("connected"), "sent": s.get("sent"),
                                 "last_error": s.get("last_error")}
                             for d, s in delivery.get("destinations", {}).items()},
            "policy": _policy_brief(policy, p.policies.highwater()),
            "hotlists": [{"list_id": h.list_id, "version": h.version} for h in p.hotlists.lists()],
            "models": _model_versions(p.config.recognizer.models_path),
            "last_read_at": self._last_read_at(),
            "disk_free_mb": stats["disk_free_mb"],
            "stage_restarts": stats["stage_restarts"],
            "clock": clock_status(),
        }

    def _recent_fps(self) -> float:
        """Frames per second since the previous status request (the pipeline's own figure is lifetime)."""
        with self._lock:
            then, frames_then = self._fps_sample
            now, frames = time.monotonic(), self.pipeline.capture.frames_read
            self._fps_sample = (now, frames)
        return round((frames - frames_then) / max(1e-3, now - then), 2)

    def _last_read_at(self) -> str | None:
        for record in reversed(self._audit_tail_records()):
            if record.get("event") == events.READ_ACCEPTED:
                return format_time(float(record["time"]))
        return None

    # --- the agent process ------------------------------------------------------------------

    def reload(self, request: dict) -> dict:
        return self._hook("reload", "the agent re-reads its config now")

    def restart(self, request: dict) -> dict:
        return self._hook("restart", "the agent stops cleanly now and is started again by systemd")

    def _hook(self, name: str, message: str) -> dict:
        hook = getattr(self.pipeline.hooks, name, None)
        if hook is None:
            return {"ok": False, "reason": "unsupported", "error": f"this agent cannot {name} on request"}
        hook()
        return {"message": message}

    # --- audit and logs -------------------------------------------------------------------------

    def audit_record(self, request: dict) -> dict:
        event = request.get("event")
        if event not in events.CONSOLE_EVENTS:
            return {"ok": False, "reason": "refused", "error": f"the console may not record {event!r}"}
        fields = request.get("fields") or {}
        if not isinstance(fields, dict):
            return {"ok": False, "reason": "bad_request", "error": "fields must be an object"}
        clean = {k: _plain(v) for k, v in fields.items() if k in CONSOLE_FIELDS}
        self.pipeline.audit.record(event, **clean)
        self.pipeline.audit.flush()
        return {}

    def _audit_tail_records(self) -> list[dict]:
        audit = self.pipeline.audit
        try:
            audit.flush()
        except Exception:  # a failing audit log is reported by the pipeline itself
            pass
        path = Path(audit.path)
        try:
            with open(path, "rb") as fh:
                size = fh.seek(0, 2)
                fh.seek(max(0, size - AUDIT_TAIL_BYTES))
                data = fh.read()
        except OSError:
            return []
        lines = data.split(b"\n")
        if size > AUDIT_TAIL_BYTES:
            lines = lines[1:]  # the first one is cut
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def audit_tail(self, request: dict) -> dict:
        """Counts and reasons over the last `n` records, and the last non-decision events: no plate text."""
        n = max(1, min(int(request.get("n", 200)), 10000))
        records = self._audit_tail_records()[-n:]
        counts: collections.Counter = collections.Counter()
        decisions: collections.Counter = collections.Counter()
        refusals: collections.Counter = collections.Counter()
        recent = []
        for record in records:
            for event, fields in expand(str(record.get("event")), record.get("fields") or {}):
                counts[event] += 1
                if event == events.DECISION:
                    verdict = "allowed" if fields.get("allowed") else "denied"
                    decisions[f"{fields.get('destination')} {verdict} ({fields.get('rule_id')})"] += 1
                elif "reason" in fields and event not in (events.READ_ACCEPTED,):
                    refusals[f"{event}: {fields.get('reason')}"] += 1
            if record.get("event") not in (events.DECISION, events.READ_ACCEPTED, events.DELIVERY_SENT,
                                           events.CHECKPOINT):
                safe = {k: record["fields"][k] for k in TAIL_FIELDS if k in (record.get("fields") or {})}
                recent.append({"time": format_time(float(record.get("time", 0))), "event": record.get("event"),
                               **safe})
        return {"records": len(records), "events": dict(counts), "decisions": dict(decisions),
                "reasons": dict(refusals), "recent": recent[-20:]}

    def log_tail(self, request: dict) -> dict:
        n = max(1, min(int(request.get("n", 50)), 500))
        return {"lines": self.log_lines(n)}

    # --- policy and hotlists ------------------------------------------------------------------------

    def policy_show(self, request: dict) -> dict:
        p = self.pipeline
        policy = p.policies.active(time.time())
        brief = _policy_brief(policy, p.policies.highwater())
        if policy is not None:
            brief["destinations"] = [
                {"id": d.id, "agency": d.agency, "class": d.dest_class, "jurisdiction": d.jurisdiction,
                 "broker": d.transport.broker_url, "purposes": sorted(d.purposes), "rule": d.rule.id,
                 "mode": d.rule.mode, "fields": sorted(d.rule.fields), "plate_form": d.rule.plate_form,
                 "identity": _identity(d.transport)}
                for d in policy.destinations]
            brief["retention"] = dataclasses.asdict(policy.retention)
        return {"policy": brief}

    def policy_install(self, request: dict) -> dict:
        return self._install(self.pipeline.policies, request, lambda p: {
            "version": p.version, "digest": p.digest, "agency": p.agency,
            "expires_at": format_time(p.expires_at), "destinations": [d.id for d in p.destinations]})

    def hotlist_install(self, request: dict) -> dict:
        return self._install(self.pipeline.hotlists, request, lambda h: {
            "list_id": h.list_id, "version": h.version})

    def _install(self, store: Any, request: dict, describe: Callable[[Any], dict]) -> dict:
        try:
            data = base64.b64decode(str(request.get("data", "")), validate=True)
        except ValueError:
            return {"ok": False, "reason": "bad_request", "error": "bundle data is not base64"}
        source = f"console:{str(request.get('technician', 'unknown'))[:64]}"
        try:
            installed = store.install(data, time.time(), source=source)
        except PolicyError as exc:  # refused and audited by the store, with the agent's reason names
            return {"ok": False, "reason": exc.reason, "error": f"refused ({exc.reason}): {exc.detail}"}
        return describe(installed)

    # --- camera ---------------------------------------------------------------------------

    def camera_snapshot(self, request: dict) -> dict:
        frame = self.pipeline.capture.latest
        if frame is None:
            return {"ok": False, "reason": "no_frame", "error": "the camera has delivered no frame yet"}
        width = max(64, min(int(request.get("width", 640)), 1920))
        jpeg = encode_snapshot(frame.image, privacy_masks(self.pipeline.config), width=width)
        return {"jpeg": base64.b64encode(jpeg).decode("ascii"), "captured_at": format_time(frame.captured_at),
                "source_size": [int(frame.image.shape[1]), int(frame.image.shape[0])]}

    def camera_test(self, request: dict) -> dict:
        """Focus, brightness, fps and the plates seen live during the test; nothing is stored."""
        seconds = max(1.0, min(float(request.get("seconds", 5)), MAX_TEST_S))
        capture = self.pipeline.capture
        recognizer = self.pipeline.recognize.recognizer
        cut = self.pipeline.config.recognizer
        start, frames0 = time.monotonic(), capture.frames_read
        focus, light, looked = [], [], 0
        plates: dict[str, dict] = {}
        last_index = None
        while time.monotonic() - start < seconds:
            frame = capture.latest
            if frame is None or frame.index == last_index:
                time.sleep(0.05)
                continue
            last_index = frame.index
            focus.append(focus_score(frame.image))
            light.append(brightness(frame.image))
            looked += 1
            for hit in recognizer.recognize_in_roi(frame.image):
                if not is_confident(hit, cut):
                    continue
                seen = plates.setdefault(hit.text, {"text": hit.text, "confidence": 0.0, "frames": 0})
                seen["frames"] += 1
                seen["confidence"] = round(max(seen["confidence"], float(hit.confidence)), 3)
        elapsed = time.monotonic() - start
        if not looked:
            return {"ok": False, "reason": "no_frame", "error": f"no frame from the camera in {seconds:.0f} s"}
        return {"seconds": round(elapsed, 1), "fps": round((capture.frames_read - frames0) / elapsed, 2),
                "frames_checked": looked, "focus": round(sum(focus) / len(focus), 1),
                "brightness": round(sum(light) / len(light), 1),
                "plates_live": sorted(plates.values(), key=lambda p: -p["frames"])}

    # --- MQTT -----------------------------------------------------------------------------

    def mqtt_test(self, request: dict) -> dict:
        """Connect to each destination the policy lists (and the status broker), verify identity, report."""
        p = self.pipeline
        creds = p.destination_credentials()
        targets: list[tuple[str, Transport, Any]] = []
        policy = p.policies.active(time.time())
        for dest in policy.destinations if policy else ():
            targets.append((dest.id, dest.transport, creds.get(dest.id)))
        status = p.config.mqtt.status
        if status.url:
            ca = Path(status.ca_file).read_text() if status.ca_file else None
            targets.append(("status", Transport(status.url, "plategate/console-test", status.server_key_sha256, ca),
                            DestinationCredentials(username=status.username, password=status.password)))
        results: list[dict] = [{} for _ in targets]
        threads = [threading.Thread(target=_test_link, args=(name, transport, cred, p.config.unit.id,
                                                               results, i), daemon=True)
                   for i, (name, transport, cred) in enumerate(targets)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(15.0)
        return {"policy_version": policy.version if policy else None,
                "results": [r or {"destination": t[0], "result": "timeout"} for r, t in zip(results, targets)]}


def _test_link(name: str, transport: Transport, cred: Any, unit_id: str, results: list, index: int) -> None:
    base = cred or DestinationCredentials()
    cred = dataclasses.replace(base, client_id=f"plategate-{unit_id}-{name}-console-test")
    out = {"destination": name, "broker": transport.broker_url, "identity": _identity(transport)}
    started = time.monotonic()
    try:
        link = MqttLink(name, transport, cred, connect_timeout=8.0)
        link.connect()
        out.update(result="ok", peer_key_sha256=link.peer_pin)
        link.close()
    except IdentityError as exc:
        out.update(result="identity_failed", detail=str(exc))
    except LinkError as exc:
        out.update(result="unreachable", detail=str(exc))
    except ValueError as exc:
        out.update(result="misconfigured", detail=str(exc))
    out["ms"] = round((time.monotonic() - started) * 1000)
    results[index] = out


def _identity(transport: Transport) -> str:
    parts = []
    if transport.server_key_sha256:
        parts.append("key pin")
    if transport.ca_pem:
        parts.append("CA")
    return " + ".join(parts) if parts else "none (plain MQTT, loopback only)"


def _policy_brief(policy: Any, highwater: int) -> dict:
    if policy is None:
        return {"active": False, "highwater_version": highwater,
                "note": "no valid policy: nothing is shared (fail closed)"}
    return {"active": True, "version": policy.version, "digest": policy.digest[:16], "agency": policy.agency,
            "signer": policy.signer_key_id, "issued_at": format_time(policy.issued_at),
            "expires_at": format_time(policy.expires_at), "destinations_count": len(policy.destinations)}


def _model_versions(models_dir: Path) -> dict[str, str]:
    try:
        manifest = json.loads((Path(models_dir) / "manifest.json").read_text())
        return {name: str(entry.get("version")) for name, entry in manifest.get("models", {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _plain(value: Any) -> Any:
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [str(v)[:200] for v in value][:100]
    return str(value)[:500]


def clock_status() -> dict:
    """Now, and whether the clock is synchronised (systemd-timesyncd / chrony via timedatectl)."""
    synced: bool | None = None
    if Path("/run/systemd/timesync/synchronized").exists():
        synced = True
    elif shutil.which("timedatectl"):
        try:
            out = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                                 capture_output=True, text=True, timeout=3)
            if out.returncode == 0 and out.stdout.strip() in ("yes", "no"):
                synced = out.stdout.strip() == "yes"
        except (OSError, subprocess.SubprocessError):
            pass
    return {"now": format_time(time.time()), "utc_offset_s": -time.timezone, "synchronized": synced}
