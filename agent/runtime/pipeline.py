"""Assemble the agent's pipeline from a config, top to bottom in DESIGN.md's order.

    FrameSource → Recognizer → Tracker → (hotlists, policy) → Outbox → EgressGate → MQTT

`build_pipeline` is the one place that knows the start-up order; `Pipeline.shutdown`
undoes it in order: sources first, publishers last.
"""
from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import events
from agent.audit.log import AuditError, AuditLog
from agent.capture.gate import MotionGate, SceneRecognizer
from agent.capture.scene import RegionOfInterest
from agent.capture.sources import open_source
from agent.config.schema import DeviceConfig
from agent.control import ControlHandle, start_control_server, stop_control_server
from agent.control.hooks import AgentHooks
from agent.delivery.outbox import Outbox
from agent.delivery.gate import EgressGate
from agent.delivery.mqtt_link import DestinationCredentials
from agent.delivery.service import DeliveryService
from agent.delivery.status import BrokerSettings, StatusPublisher
from agent.policy.errors import PolicyError
from agent.policy.hotlist import HotlistStore
from agent.policy.keyring import Keyring, load_keyring
from agent.policy.keyring import load_hmac_keys as load_hmac_keys_strict
from agent.policy.signing import load_private_key, load_trusted_keys
from agent.policy.store import PolicyStore
from agent.provenance.keys import DEFAULT_UNIT_KEY_NAME, load_unit_key_or_create
from agent.provenance.messages import UnitSigner
from agent.runtime.logs import FORMAT
from agent.runtime.queues import DropOldestQueue
from agent.runtime.stage import RestartPolicy, Stage
from agent.runtime.stages import AcceptStage, CaptureStage, PlateRecognizer, RecognizeStage, TrackStage
from agent.tracking.passes import PassTracker, weak_cut
from agent.vision.recognizer import Recognizer, is_confident

log = logging.getLogger(__name__)

# Bounded queues after recognition (back-pressure, see agent/runtime/stages.py): a few
# seconds of a busy road each; the frame queue before them drops instead (source.frame_queue).
SIGHTINGS_QUEUE = 256
READS_QUEUE = 1024


@dataclass(frozen=True)
class StopReport:
    """What a stop left behind (see Pipeline.shutdown)."""

    clean: bool                 # every stage stopped within the budget
    queued: int                 # deliveries queued in the outbox: durable, sent after a restart
    unstored_reads: int         # reads only in memory (the disk refused them): lost
    unstored_hits: int
    audit_unwritten: int        # audit records the disk refused: lost

    @property
    def complete(self) -> bool:
        """Nothing was lost: every read and audit record made it to disk."""
        return not (self.unstored_reads or self.audit_unwritten)


@dataclass
class Pipeline:
    config: DeviceConfig
    stop: threading.Event
    audit: AuditLog
    policies: PolicyStore
    hotlists: HotlistStore
    outbox: Outbox
    delivery: DeliveryService
    status: StatusPublisher | None
    capture: CaptureStage
    scene: SceneRecognizer
    recognize: RecognizeStage
    track: TrackStage
    accept: AcceptStage
    started_at: float = field(default_factory=time.time)
    final_stats: dict[str, Any] | None = None  # the last figures, kept once the outbox is closed
    hooks: AgentHooks = field(default_factory=AgentHooks)  # reload/restart for the console (set by Agent)
    control: ControlHandle | None = None

    @property
    def stages(self) -> tuple[Stage, ...]:
        return (self.capture, self.recognize, self.track, self.accept)

    def beating(self) -> list[Any]:
        """Everything the systemd watchdog expects to keep making progress: stages and senders."""
        return [*self.stages, *self.delivery.senders()]

    def start(self) -> None:
        """Start-up side effects, in order: the outbox follows the policy and re-checks what
        survived on disk, the senders start, then the stages, consumers first."""
        self.outbox.start()
        self.delivery.start()
        if self.status is not None:
            self.status.start()
        for stage in reversed(self.stages):  # consumers first, so nothing waits on a missing reader
            stage.start()
        self.control = start_control_server(self, FORMAT)  # the technician console's socket; never fatal
        log.info("pipeline started unit=%s camera=%s", self.config.unit.id, self.config.unit.camera_id)

    def destination_credentials(self) -> dict[str, DestinationCredentials]:
        """The MQTT credentials of the current config's destinations (the console's `mqtt test`)."""
        return destination_credentials(self.config)

    def fatal(self) -> Stage | None:
        return next((s for s in self.stages if s.fatal.is_set()), None)

    def reads_settled(self) -> bool:
        """The source has ended, every stage has drained and the outbox has nothing left to send."""
        if not all(stage.finished.is_set() for stage in self.stages):
            return False
        return sum(self.outbox_depths().values()) == 0

    def outbox_depths(self) -> dict[str, int]:
        return self.outbox.depths()

    def shutdown(self, timeout: float = 4.5) -> StopReport:
        """Stop in order within `timeout`: capture, recognition, tracking, accept, delivery, status.

        Returns what was left: reads queued on disk for delivery (kept; sent after a restart)
        and, when the disk was full, reads and audit records only held in memory (lost with
        the process). Each is said in the "pipeline stopped" line.
        """
        deadline = time.monotonic() + timeout
        self.stop.set()
        stop_control_server(self.control)
        clean = True
        for stage in self.stages:
            if not stage.join(max(0.05, deadline - time.monotonic() - 1.0)):
                log.error("stage did not stop in time stage=%s", stage.name)
                clean = False
        self.delivery.stop(timeout=max(0.1, deadline - time.monotonic() - 0.3))
        if self.status is not None:
            self.status.stop(timeout=max(0.1, deadline - time.monotonic()))
        self.final_stats = self.stats()
        unstored, unstored_hits = self.accept.unstored()
        try:
            self.outbox.close()
        except Exception as exc:  # the outbox is closed as far as it can be; say so, keep stopping
            log.warning("outbox not closed cleanly path=%s error=%s", self.outbox.path, exc)
        try:
            self.audit.close()
        except AuditError as exc:
            log.debug("audit log not closed: %s", exc)
        report = StopReport(clean=clean, queued=sum(self.final_stats["queue_depth"].values()),
                            unstored_reads=unstored, unstored_hits=unstored_hits,
                            audit_unwritten=self.audit.unwritten)
        stats = self.final_stats
        log.log(logging.INFO if report.complete else logging.WARNING,
                "pipeline stopped clean=%s frames_read=%d frames_dropped=%d frames_corrupt=%d reads_accepted=%d "
                "reads_refused_full=%d restarts=%s pending: queued_for_delivery=%d (kept on disk) "
                "unstored_reads=%d unstored_hits=%d audit_records_unwritten=%d (in memory only: lost on exit)",
                clean, stats["frames_read"], stats["frames_dropped"], stats["frames_corrupt"],
                stats["reads_accepted"], stats["reads_refused_full"], stats["stage_restarts"],
                report.queued, report.unstored_reads, report.unstored_hits, report.audit_unwritten)
        return report

    def stats(self) -> dict[str, Any]:
        if self.final_stats is not None:
            return self.final_stats
        policy = self.policies.active(time.time())
        disk = shutil.disk_usage(self.config.unit.state_dir)
        return {
            "frames_read": self.capture.frames_read,
            "frames_dropped": self.capture.frames.dropped,
            "frames_corrupt": self.capture.corrupt_frames,
            "frames_recognized": self.recognize.frames_done,
            "frames_failed": self.recognize.failed_frames,
            "frames_motion_skipped": self.scene.frames_skipped,
            "frames_detector_run": self.scene.frames_recognized,
            "source": self.capture.source_status(),
            "fps": round(self.recognize.frames_done / max(1e-6, time.time() - self.started_at), 2),
            "reads_emitted": self.track.reads_emitted,
            "passes_dropped_weak": getattr(self.track.tracker, "tracks_dropped", 0),
            "passes_by_evidence": dict(getattr(self.track.tracker, "accepted_by", {})),
            "reads_accepted": self.accept.accepted,
            "reads_refused_full": self.accept.refused_full,
            "stage_restarts": {s.name: s.restarts for s in self.stages},
            "policy_version": policy.version if policy else None,
            "queue_depth": self.outbox_depths(),
            "disk_free_mb": disk.free // 2**20,
            "disk_full": self.outbox.disk.stats(),
            "delivery": self.delivery.stats(),
        }


def build_pipeline(config: DeviceConfig, recognizer: PlateRecognizer | None = None,
                   clock: Callable[[], float] = time.time) -> Pipeline:
    """Create every component of the agent from `config`; nothing runs until `Pipeline.start()`."""
    state_dir = Path(config.unit.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    unit_key = load_private_key(config.audit.unit_key) if config.audit.unit_key else None
    audit = AuditLog(state_dir / "audit.jsonl", signing_key=unit_key, checkpoint_every=config.audit.checkpoint_every,
                     seal_interval_s=config.audit.seal_interval_s)
    trusted_keys = load_trusted_keys(config.policy.trusted_keys)
    hmac_keys = load_hmac_keys(config.policy.hmac_keys)
    audit.record(events.KEYS_LOADED, source="start", **Keyring(trusted_keys, hmac_keys).audit_fields())
    allow_plain = config.delivery.allow_plaintext_loopback
    if allow_plain:
        log.warning("plain MQTT allowed to loopback brokers ([delivery] allow_plaintext_loopback = true): "
                    "reads to such a destination travel unencrypted, with no server identity; tests and "
                    "demos only")
        audit.record(events.PLAINTEXT_ALLOWED, setting="delivery.allow_plaintext_loopback")
    policies = PolicyStore(state_dir / "policy", trusted_keys, audit, allow_plaintext_loopback=allow_plain)
    hotlists = HotlistStore(state_dir, trusted_keys, audit)  # the store keeps its own hotlists/ folder
    install_policy_and_hotlists(config, policies, hotlists, clock())

    outbox = Outbox(state_dir / "outbox.sqlite", int(config.outbox.max_mb * 2**20), policies, audit,
                    hmac_keys, hotlists=hotlists)
    gate = EgressGate(policies, audit, outbox, signer=read_signer(config, unit_key))
    delivery = DeliveryService(outbox, gate, policies, audit, destination_credentials(config), threading.Event(),
                               purge_interval_s=config.outbox.retention_check_s)

    if recognizer is None:
        recognizer = Recognizer.from_config(config.recognizer)

    restart = RestartPolicy(config.supervisor.max_restarts, config.supervisor.window_s,
                            config.supervisor.backoff_initial_s, config.supervisor.backoff_max_s)
    frames: DropOldestQueue = DropOldestQueue(config.source.frame_queue)
    sightings: queue.Queue = queue.Queue(maxsize=SIGHTINGS_QUEUE)
    reads: queue.Queue = queue.Queue(maxsize=READS_QUEUE)
    capture = CaptureStage(stop, lambda: open_source(config.source, config.scene), config.source.fps, frames)
    scene = scene_recognizer(config, recognizer)
    cut = config.recognizer
    recognize = RecognizeStage(stop, capture, frames, scene, lambda hit: is_confident(hit, cut), sightings,
                               weak_cut(config.tracker, cut))
    tracker = pass_tracker(config)
    track = TrackStage(stop, recognize, sightings, tracker, reads, clock=clock, journal=outbox)
    accept = AcceptStage(stop, track, reads, outbox, clock=clock)
    for stage in (capture, recognize, track, accept):
        stage.restart_policy = restart

    pipeline = Pipeline(config=config, stop=stop, audit=audit, policies=policies, hotlists=hotlists,
                        outbox=outbox, delivery=delivery, status=None, capture=capture, scene=scene, recognize=recognize,
                        track=track, accept=accept)
    pipeline.status = make_status_publisher(config, pipeline.stats)
    return pipeline


def pass_tracker(config: DeviceConfig) -> PassTracker:
    t = config.tracker
    return PassTracker(config.unit.camera_id, t.merge_window_s, t.max_track_s, t.min_frames, config.unit.latitude,
                       config.unit.longitude, t.agreeing_frames, config.recognizer.min_confidence,
                       t.stopped_timeout_s, t.detected_frames, t.detected_min_score)


def scene_recognizer(config: DeviceConfig, recognizer: PlateRecognizer) -> SceneRecognizer:
    """The recognizer behind the region of interest and, when enabled, the motion gate."""
    scene = config.scene
    roi = RegionOfInterest(scene.roi)
    gate = MotionGate(roi, scene.motion_width, scene.motion_threshold, scene.motion_min_area) \
        if scene.motion_gate else None
    return SceneRecognizer(recognizer, roi, gate, scene.recheck_s)


def read_signer(config: DeviceConfig, unit_key: Ed25519PrivateKey | None) -> UnitSigner:
    """The key every published read is signed with: `audit.unit_key`, or, when the config names
    none, one the unit creates in its state dir on first start (its key id is logged)."""
    if unit_key is None:
        unit_key = load_unit_key_or_create(Path(config.unit.state_dir) / DEFAULT_UNIT_KEY_NAME)
    return UnitSigner(config.unit.id, unit_key)


def install_policy_and_hotlists(config: DeviceConfig, policies: PolicyStore, hotlists: HotlistStore,
                                now: float) -> None:
    """Install the configured policy and hotlists; a refusal keeps the last good one (fail closed)."""
    policies.load_persisted(now)
    if config.policy.bundle is not None:
        _install(policies, config.policy.bundle, now, "policy")
    for path in config.policy.hotlists:
        _install(hotlists, path, now, "hotlist")


def _install(store: Any, path: Path, now: float, what: str) -> None:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        log.error("%s not installed path=%s reason=cannot read (%s)", what, path, exc.strerror)
        return
    try:
        store.install(data, now, source=str(path))
    except ValueError as exc:
        log.error("%s refused path=%s reason=%s", what, path, exc)


def load_hmac_keys(path: Path | None) -> dict[str, bytes]:
    """At start: the HMAC keys, or none if the file cannot be used (a destination whose rule
    hashes the plate then gets nothing: fail closed). A reload refuses such a file instead."""
    try:
        return load_hmac_keys_strict(path)
    except PolicyError as exc:
        log.error("hmac keys not loaded path=%s reason=%s", path, exc.detail)
        return {}


def reload_keys(pipeline: Pipeline, config: DeviceConfig) -> Keyring:
    """SIGHUP: load every key `config` names and switch the running stores to them.

    All or nothing: PolicyError("bad_key") naming the file leaves the running keys as they
    were. The new key ids are audited (`keys.loaded`).
    """
    keys = load_keyring(config.policy.trusted_keys, config.policy.hmac_keys)
    pipeline.policies.set_trusted_keys(keys.trusted)
    pipeline.hotlists.set_trusted_keys(keys.trusted)
    pipeline.outbox.hmac_keys = dict(keys.hmac)
    pipeline.audit.record(events.KEYS_LOADED, source="reload", **keys.audit_fields())
    log.info("keys loaded source=reload trusted=%s hmac=%s", ",".join(sorted(keys.trusted)) or "none",
             ",".join(f"{d}:{i}" for d, i in keys.audit_fields()["hmac"].items()) or "none")
    return keys


def destination_credentials(config: DeviceConfig) -> dict[str, DestinationCredentials]:
    return {
        d.id: DestinationCredentials(username=d.username, password=d.password,
                                     client_cert=str(d.client_cert) if d.client_cert else None,
                                     client_key=str(d.client_key) if d.client_key else None,
                                     protocol=d.protocol, client_id=f"plategate-{config.unit.id}-{d.id}")
        for d in config.mqtt.destinations
    }


def make_status_publisher(config: DeviceConfig, stats: Callable[[], dict]) -> StatusPublisher | None:
    status = config.mqtt.status
    if status.url is None:
        return None
    ca_pem = Path(status.ca_file).read_text() if status.ca_file else None
    broker = BrokerSettings(url=status.url, server_key_sha256=status.server_key_sha256, ca_pem=ca_pem,
                            credentials=DestinationCredentials(username=status.username, password=status.password,
                                                               client_id=f"plategate-{config.unit.id}-status"),
                            keepalive=config.mqtt.keepalive_s)
    return StatusPublisher(broker, config.unit.id, status.topic_prefix, stats, threading.Event(),
                           interval_s=status.heartbeat_s, disk_path=config.unit.state_dir)
