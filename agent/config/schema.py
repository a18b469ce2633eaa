"""The device config schema: every key a unit's TOML may hold, its type, range and default.

Unknown keys are errors (a typo must never silently fall back to a default). Paths
are resolved against the directory of the config file, so a config and the files it
names can move together.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agent.config.fields import setting
from agent.regions import EXHAUSTIVE_REGIONS, REGIONS, STATES_WITHOUT_LETTER_O, US_STATE_CODES
from agent.resources import bundled_models_dir

PORT = dict(min=1, max=65535, reason="is not a port")
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
SOURCE_KINDS = ("video_file", "image_folder", "v4l2", "rtsp", "http_mjpeg")
REPLAY_KINDS = ("video_file", "image_folder")
STREAM_KINDS = ("rtsp", "http_mjpeg")
STREAM_SCHEMES = {"rtsp": ("rtsp", "rtsps"), "http_mjpeg": ("http", "https")}
REGION_HINT = f"({'|'.join(REGIONS)})|US-({'|'.join(US_STATE_CODES)})"


@dataclass(frozen=True)
class UnitConfig:
    id: str = setting("unit-0001", help="Unit identifier used in status topics and audit records.",
                      pattern=ID_PATTERN, reason="is not a valid id (letters, digits, . _ -, at most 64)")
    camera_id: str = setting("cam-1", help="Camera identifier stamped on every read.",
                             pattern=ID_PATTERN, reason="is not a valid id (letters, digits, . _ -, at most 64)")
    latitude: float | None = setting(None, help="Camera latitude in degrees (WGS84); omit if unknown.",
                                     min=-90, max=90, reason="is not a latitude")
    longitude: float | None = setting(None, help="Camera longitude in degrees (WGS84); omit if unknown.",
                                      min=-180, max=180, reason="is not a longitude")
    state_dir: Path = setting(Path("/var/lib/plategate"),
                              help="Where the outbox, audit log, policy and keys live.")


@dataclass(frozen=True)
class LoggingConfig:
    level: str = setting("INFO", help="Log level.", choices=LOG_LEVELS)


@dataclass(frozen=True)
class SourceConfig:
    kind: str = setting("video_file", help="Frame source kind: a file or folder to replay, a V4L2 camera, "
                                           "or an RTSP or HTTP(S) MJPEG stream.", choices=SOURCE_KINDS)
    path: Path | None = setting(None, help="Video file or image folder to replay (video_file, image_folder).")
    url: str | None = setting(None, help="Stream URL: rtsp://host[:port]/path (rtsp) or "
                                         "http(s)://host[:port]/path (http_mjpeg). Credentials go in "
                                         "username and password, never in the URL.")
    device: str | None = setting(None, help="V4L2 camera: /dev/videoN, a /dev/v4l/by-id/ link, or the index N "
                                            "(v4l2).", pattern=r"[0-9]{1,3}|/dev/\S+",
                                 reason="is not a V4L2 device (/dev/videoN or an index)")
    username: str | None = setting(None, help="Stream user name (rtsp, http_mjpeg).")
    password: str | None = setting(None, help="Stream password (rtsp, http_mjpeg); never logged.", secret=True)
    rtsp_transport: str = setting("tcp", help="RTSP transport.", choices=("tcp", "udp"))
    width: int | None = setting(None, help="Capture width to ask the V4L2 driver for (v4l2).", min=16, max=8192)
    height: int | None = setting(None, help="Capture height to ask the V4L2 driver for (v4l2).", min=16, max=8192)
    exposure: float | None = setting(None, help="Manual exposure to set where the V4L2 driver allows it, in the "
                                                "driver's units (v4l2; omit for automatic).")
    gain: float | None = setting(None, help="Gain to set where the V4L2 driver allows it (v4l2).")
    fps: float = setting(10.0, help="Frames per second handed to recognition: the replay pace of a file or "
                                    "folder; for a camera or stream the most per second (the newest frame "
                                    "is taken, the ones in between are dropped and counted).",
                         min=0.1, max=120, reason="is not a usable frame rate")
    loop: bool = setting(False, help="Replay the file or folder again when it ends.")
    frame_queue: int = setting(4, help="Frames buffered before the oldest is dropped.", min=1, max=256)
    exit_at_end: bool = setting(False, help="Stop the agent once the source ends and every read is "
                                            "delivered or held (demo and batch use).")
    stall_timeout_s: float = setting(5.0, help="A camera or stream that delivers no frame for this long is "
                                               "treated as lost and reconnected.", min=0.5, max=600)
    reconnect_initial_s: float = setting(0.5, help="First wait before reopening a lost source (jittered, "
                                                   "doubling on each failure).", min=0.05, max=60)
    reconnect_max_s: float = setting(30.0, help="Longest wait between attempts to reopen a lost source.",
                                     min=0.1, max=3600)


@dataclass(frozen=True)
class SceneConfig:
    roi: tuple[tuple[float, ...], ...] = setting(
        default_factory=tuple, help="Region of interest: a polygon of [x, y] points as fractions of the "
                                    "frame's width and height (0-1); plates are detected only inside it. "
                                    "Empty: the whole frame.")
    privacy_masks: tuple[tuple[tuple[float, ...], ...], ...] = setting(
        default_factory=tuple, help="Polygons (same form as roi) blacked out on every frame as it is "
                                    "captured, before recognition, tracking, snapshots or any image that "
                                    "leaves the unit (house windows, sidewalks, a school entrance).")
    motion_gate: bool = setting(True, help="Skip recognition on frames where nothing moved inside the "
                                           "region of interest (a cheap test on a downscaled frame).")
    motion_width: int = setting(160, help="Width in pixels of the downscaled frame the motion test runs on.",
                                min=32, max=1920)
    motion_threshold: int = setting(18, help="Grey-level change (0-255) for a downscaled pixel to count as "
                                             "moved.", min=1, max=255)
    motion_min_area: float = setting(0.002, help="Share of the region of interest that must move for a "
                                                 "frame to be recognised.", min=0, max=1)
    recheck_s: float = setting(1.0, help="While plates are in view and nothing moves (a stopped vehicle), "
                                         "recognise one frame this often so the vehicle stays one pass.",
                               min=0.05, max=60)


@dataclass(frozen=True)
class RecognizerConfig:
    models_dir: Path | None = setting(None, help="Folder with the ONNX models and manifest.json (omit to use "
                                                 "the models shipped with the package).")
    threads: int = setting(1, help="CPU threads for ONNX Runtime.", min=1, max=16)
    region: str | None = setting(
        None, help="Where the camera stands, for the plate format tables: "
                   f"{', '.join(REGIONS)}, or US-XX for a US state (US-FL); omit to allow every "
                   f"region's formats. In {', '.join(EXHAUSTIVE_REGIONS)} every car plate fits a "
                   "listed layout, so a read that fits none is re-read as the nearest one that does; "
                   f"in {', '.join('US-' + s for s in STATES_WITHOUT_LETTER_O)} (no letter O issued) "
                   "a round glyph is read as 0 (docs/ocr.md).",
        pattern=REGION_HINT, reason=f"is not a region ({', '.join(REGIONS)}, or US-XX for a US "
                                    "state, e.g. US-FL)")
    min_plate_px: int = setting(40, help="Narrowest plate to find, in frame pixels; larger values let big "
                                         "frames (4K) be scaled down further, which is faster.", min=8, max=2000)
    max_plate_px: int = setting(400, help="Widest plate to find, in frame pixels.", min=16, max=4000)
    detail_proposals: bool = setting(
        True, help="On big frames (4K), look for plates in detail only where a quick look at half "
                   "the scale sees something plate-like: a 4K frame then takes about 40% less CPU. "
                   "Off runs the detail pass over the whole frame, for cameras whose plates are "
                   "mostly near min_plate_px wide, some of which the quick look misses "
                   "(docs/detection.md, Proposals).")
    min_confidence: float = setting(0.7, help="Plate reads below this confidence are ignored.", min=0, max=1)
    min_confidence_no_format: float = setting(
        0.9, help="Reads matching no known plate format (sign or vehicle lettering) need this confidence. "
                  "With min_confidence these give no false read on 300 plate-free frames of the training "
                  "sets' val scenes (docs/detection.md).", min=0, max=1)
    min_detection_score_no_format: float = setting(
        0.6, help="Reads matching no known plate format also need this detector score (sign lettering "
                  "scored 0.50-0.54 on the plate-free frames, plates of no listed format 0.55 and up, "
                  "most above 0.6; docs/detection.md).", min=0, max=1)

    @property
    def models_path(self) -> Path:
        """The models folder to load: `models_dir`, or the models shipped with the package."""
        return self.models_dir or bundled_models_dir()


@dataclass(frozen=True)
class TrackerConfig:
    merge_window_s: float = setting(3.0, help="A vehicle's track ends when its plate has not been seen for "
                                              "this long; its one read event is emitted then.",
                                    min=0.1, max=600)
    stopped_timeout_s: float = setting(9.0, help="The same for a plate that stood still inside the picture: a "
                                                 "stopped vehicle whose plate the detector loses for a while "
                                                 "(glare, a passing vehicle in front) stays one pass.",
                                       min=0.1, max=600)
    max_track_s: float = setting(300.0, help="A track that lasts this long (a parked vehicle) is emitted and "
                                             "a new one started.", min=1, max=86400)
    min_frames: int = setting(1, help="Frames a plate must be seen in before it becomes a read.",
                              min=1, max=100)
    weak_min_confidence: float = setting(
        0.1, help="Reads below recognizer.min_confidence but fitting a plate format, at least this "
                  "confident and with a detector score of at least recognizer.min_detection_score_no_format "
                  "are kept as evidence for their pass: they vote, and a pass seen only in such reads is "
                  "still a read when agreeing_frames of them read the same text.", min=0, max=1)
    agreeing_frames: int = setting(
        4, help="Frames that must read exactly the same text for a pass without one read above "
                "recognizer.min_confidence to count (their combined confidence must also reach it).",
        min=2, max=100)
    detected_frames: int = setting(
        6, help="A pass with no read above the cut and no agreeing_frames agreeing still counts "
                "when the detector scored its plate at detected_min_score or more in this many "
                "frames and the plate crossed at least its own width: its event carries "
                "evidence = \"detection\" and the vote's (low) confidence. Reads that fit no "
                "plate format join such a pass at that detector score. 0 turns the rule off. "
                "Chosen on training-derived clips at 10 fps (docs/capture.md).",
        min=0, max=100)
    detected_min_score: float = setting(
        0.7, help="The detector score a frame needs to count for detected_frames (sign "
                  "lettering scored 0.50-0.54 on plate-free frames; docs/detection.md).",
        min=0, max=1)


@dataclass(frozen=True)
class PolicyConfig:
    bundle: Path | None = setting(None, help="Signed policy bundle installed at start-up and on SIGHUP "
                                             "(omit to use the last installed one in state_dir).")
    trusted_keys: tuple[Path, ...] = setting(default_factory=tuple,
                                             help="Department public keys (PEM) allowed to sign policies.")
    hotlists: tuple[Path, ...] = setting(default_factory=tuple, help="Signed hotlist bundles to install.")
    hmac_keys: Path | None = setting(None, help="TOML file mapping destination id to its hex HMAC key.",
                                     secret=True)


@dataclass(frozen=True)
class AuditConfig:
    unit_key: Path | None = setting(None, help="Unit Ed25519 private key (PEM) that signs audit checkpoints and "
                                               "every published read (its key id is what a department "
                                               "registers); unset: reads are signed with a key the unit "
                                               "creates once as unit.key in state_dir.")
    checkpoint_every: int = setting(1000, help="Records between signed checkpoints.", min=1, max=1_000_000)
    seal_interval_s: float = setting(1.0, help="Seconds between re-signing the log's head; records newer "
                                               "than the last seal could be cut off undetected.",
                                     min=0.05, max=3600)


@dataclass(frozen=True)
class OutboxConfig:
    max_mb: float = setting(512.0, help="Largest size of the outbox database on disk.", min=1, max=1_000_000)
    retention_check_s: float = setting(30.0, help="Seconds between retention sweeps.", min=1, max=3600)


@dataclass(frozen=True)
class DestinationCredentialsConfig:
    id: str = setting(help="Destination id, as named in the policy.", pattern=ID_PATTERN,
                      reason="is not a valid id (letters, digits, . _ -, at most 64)")
    username: str | None = setting(None, help="MQTT user name.")
    password: str | None = setting(None, help="MQTT password.", secret=True)
    client_cert: Path | None = setting(None, help="Client certificate (PEM) for mutual TLS.")
    client_key: Path | None = setting(None, help="Client private key (PEM) for mutual TLS.", secret=True)
    protocol: str = setting("5", help="MQTT protocol version.", choices=("5", "3.1.1"))


@dataclass(frozen=True)
class StatusConfig:
    url: str | None = setting(None, help="Broker for the unit's status and heartbeat, mqtts://host:port "
                                         "(plain mqtt:// only to a 127.x.x.x broker; omit to disable).",
                              pattern=r"mqtts?://[^/\s:]+(:[0-9]{1,5})?", reason="is not an mqtt:// or mqtts:// URL")
    server_key_sha256: str | None = setting(None, help="SHA-256 (hex) of the status broker's public key, "
                                                       "checked before anything is sent.",
                                            pattern=r"[0-9a-fA-F]{64}", reason="is not a hex SHA-256")
    ca_file: Path | None = setting(None, help="CA certificate (PEM) the status broker's certificate must "
                                              "chain to (mqtts).")
    topic_prefix: str = setting("plategate", help="Status topic is <prefix>/<unit id>/status.",
                                pattern=r"[^#+$/][^#+]*", reason="is not a valid topic prefix")
    heartbeat_s: float = setting(30.0, help="Seconds between heartbeats.", min=1, max=3600)
    username: str | None = setting(None, help="MQTT user name for the status broker.")
    password: str | None = setting(None, help="MQTT password for the status broker.", secret=True)


@dataclass(frozen=True)
class MqttConfig:
    keepalive_s: int = setting(30, help="MQTT keep-alive in seconds (status connection).", min=5, max=3600)
    destinations: tuple[DestinationCredentialsConfig, ...] = setting(
        default_factory=tuple, help="Credentials per policy destination; a destination with none connects "
                                    "anonymously.")
    status: StatusConfig = setting(default_factory=StatusConfig, help="Unit status publishing.")


@dataclass(frozen=True)
class DeliveryConfig:
    allow_plaintext_loopback: bool = setting(
        False, help="Accept policies whose destinations use plain mqtt:// to a 127.x.x.x broker (no TLS, "
                    "no server identity). For tests and demos on one machine only: logged as a WARNING "
                    "and audited at start. Off, such a policy is refused.")


@dataclass(frozen=True)
class SupervisorConfig:
    max_restarts: int = setting(5, help="Restarts of one stage allowed within window_s before the agent "
                                        "exits for systemd to restart it.", min=0, max=1000)
    window_s: float = setting(60.0, help="Window for counting stage restarts.", min=1, max=86400)
    backoff_initial_s: float = setting(0.2, help="First wait before restarting a crashed stage.",
                                       min=0, max=60)
    backoff_max_s: float = setting(10.0, help="Longest wait before restarting a crashed stage.",
                                   min=0, max=600)


# scrypt$<log2 N>$<r>$<p>$<salt b64>$<hash b64>, written by the console itself (agent/console/auth.py)
PASSWORD_HASH = r"scrypt\$[0-9]{1,2}\$[0-9]{1,2}\$[0-9]{1,2}\$[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]+={0,2}"


@dataclass(frozen=True)
class ConsoleConfig:
    port: str = setting("/dev/ttyS0", help="Serial port of the technician's console (/dev/ttyS0, /dev/ttyGS0 for "
                                           "USB gadget mode); `plategate console --port` overrides it.",
                        pattern=r"/dev/\S+", reason="is not a device path (/dev/...)")
    baud: int = setting(115200, help="Serial line speed (8 data bits, no parity, 1 stop bit).",
                        min=1200, max=4_000_000, reason="is not a usable baud rate")
    password_hash: str | None = setting(None, help="scrypt hash of the technician password. There is no default: "
                                                   "a unit without one lets the technician set it once at the "
                                                   "console (audited); never write a password here.",
                                        pattern=PASSWORD_HASH, secret=True,
                                        reason="is not a console password hash (set the password at the console)")
    idle_timeout_s: float = setting(600.0, help="A logged-in console session with no input for this long is "
                                                "logged out.", min=1, max=86400)
    lockout_failures: int = setting(3, help="Failed logins in a row that lock the console (the first ones "
                                            "only add a short delay).", min=1, max=20)
    lockout_s: float = setting(900.0, help="First lockout; each further failure doubles it, up to a day. The "
                                           "failure count survives a console restart.", min=60, max=86400)


@dataclass(frozen=True)
class DeviceConfig:
    unit: UnitConfig = field(default_factory=UnitConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    scene: SceneConfig = field(default_factory=SceneConfig)
    recognizer: RecognizerConfig = field(default_factory=RecognizerConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)


SECTION_HELP = {
    "unit": "Identity and storage of this camera unit.",
    "logging": "Logging.",
    "source": "Where frames come from.",
    "scene": "What of each frame is looked at: the region of interest, privacy masks, motion gating.",
    "recognizer": "Plate detection and OCR.",
    "tracker": "Grouping sightings of one vehicle into one read.",
    "policy": "The department's signed sharing policy and hotlists.",
    "audit": "The hash-chained audit log.",
    "outbox": "The durable store-and-forward queue.",
    "mqtt": "MQTT connections (destinations themselves come from the signed policy).",
    "delivery": "How reads may leave the unit.",
    "supervisor": "Restarting crashed stages.",
    "console": "The field technician's serial console (`plategate console`, docs/console.md).",
}
