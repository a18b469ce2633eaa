"""Real mosquitto brokers for tests: TLS (the default), ACL and password protected, or plain.

Every fault test of the delivery stage runs against a real broker so that what is
tested is what the camera unit will see on the wire (PUBACK reason codes, TLS
handshakes, session behaviour), not what a mock thinks a broker would do.

`MosquittoBroker` writes a config into a test directory, starts `mosquitto` on a free
127.0.0.1 port, waits until it accepts TCP connections and stops it cleanly. Its listener
is TLS unless `plain=True`: a unit refuses plain MQTT (DESIGN invariant 5), so tests use
the real path, with `broker.url` (mqtts://) and `broker.pin` (the server key's SPKI
SHA-256) in the policy. `make_tls_files()` generates a throw-away CA, a server certificate
for 127.0.0.1 and a client certificate with `cryptography` (a broker without `tls=` makes
its own under its workdir), so nothing is committed and no test depends on files outside
tmp_path. `connections()` reads the broker's own log of accepted connections.
`Collector` subscribes to `#` and keeps every message it sees.
"""
from __future__ import annotations

import datetime
import hashlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def find_mosquitto() -> str | None:
    """The mosquitto binary from PATH or its Debian location, or None if not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    if os.access("/usr/sbin/mosquitto", os.X_OK):
        return "/usr/sbin/mosquitto"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- certificates ---------------------------------------------------------------------

@dataclass(frozen=True)
class TlsFiles:
    """PEM files of one throw-away PKI; `server_key_sha256` is the pin of the server key."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    server_key_sha256: str

    @property
    def ca_pem(self) -> str:
        return self.ca_cert.read_text()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def spki_sha256(public_key) -> str:
    """Hex SHA-256 of a public key's SubjectPublicKeyInfo DER (the pin format of the policy)."""
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def make_tls_files(directory: Path, ca: TlsFiles | None = None,
                   client_name: str = "plategate-unit") -> TlsFiles:
    """Generate a CA (or reuse `ca`'s), a server cert for 127.0.0.1/localhost and a client cert.

    Passing another TlsFiles as `ca` gives a second server with a *different key* signed by
    the same CA: the case where only the key pin, not the CA, tells the impostor apart.
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)

    if ca is None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = (x509.CertificateBuilder()
                   .subject_name(_name("plategate test CA")).issuer_name(_name("plategate test CA"))
                   .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(start).not_valid_after(end)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(ca_key, hashes.SHA256()))
        ca_cert_path, ca_key_path = directory / "ca.crt", directory / "ca.key"
        ca_cert_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        _write_key(ca_key_path, ca_key)
    else:
        ca_cert_path, ca_key_path = ca.ca_cert, ca.ca_key
        ca_cert = x509.load_pem_x509_certificate(ca.ca_cert.read_bytes())
        ca_key = serialization.load_pem_private_key(ca.ca_key.read_bytes(), password=None)

    def issue(common_name: str, server: bool) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder()
                   .subject_name(_name(common_name)).issuer_name(ca_cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(start).not_valid_after(end)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
        if server:
            import ipaddress
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    server_cert, server_key = issue("127.0.0.1", server=True)
    client_cert, client_key = issue(client_name, server=False)
    paths = {}
    for stem, cert, key in (("server", server_cert, server_key), ("client", client_cert, client_key)):
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
        paths[stem] = (cert_path, key_path)
    return TlsFiles(ca_cert=ca_cert_path, ca_key=ca_key_path,
                    server_cert=paths["server"][0], server_key=paths["server"][1],
                    client_cert=paths["client"][0], client_key=paths["client"][1],
                    server_key_sha256=spki_sha256(server_key.public_key()))


# --- broker -----------------------------------------------------------------------------

@dataclass
class MosquittoBroker:
    """One real mosquitto process on 127.0.0.1.

    `acl` is the text of an ACL file, `passwords` maps user -> password (hashed with
    mosquitto_passwd). With `tls`, the listener is TLS only; `require_client_cert` makes
    the broker demand the client certificate. The port stays the same across
    stop()/start(), so a test can take the broker down and bring it back.
    """

    workdir: Path
    port: int = 0
    tls: TlsFiles | None = None
    require_client_cert: bool = False
    acl: str | None = None
    passwords: dict[str, str] | None = None
    persistence: bool = False
    max_inflight: int = 0          # mosquitto max_inflight_messages (MQTT 5 Receive Maximum)
    plain: bool = False            # a plain listener (no TLS): only for what is not a destination
    binary: str | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        if self.tls is None and not self.plain:
            self.tls = make_tls_files(self.workdir / "pki")
        self.binary = self.binary or find_mosquitto()
        if self.binary is None:
            raise FileNotFoundError("mosquitto not found on PATH or at /usr/sbin/mosquitto; "
                                    "install it (apt-get install mosquitto) to run broker tests")

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    @property
    def pin(self) -> str | None:
        """The SPKI SHA-256 pin of the broker's server key (what a policy names), or None."""
        return self.tls.server_key_sha256 if self.tls else None

    @property
    def ca_pem(self) -> str | None:
        return self.tls.ca_pem if self.tls else None

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def connections(self) -> list[str]:
        """The broker's own log lines for every connection it accepted ("New connection
        from ...", or "Client connection from ... failed" for a failed TLS handshake) and
        every client it let in ("New client connected ... as <client id>"), in order: what
        the broker saw, whoever subscribed or not."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines()
                if "New connection from" in line or "New client connected" in line
                or "Client connection from" in line]

    def client_ids(self) -> list[str]:
        """Client ids the broker let in, in order (from `connections()`)."""
        out = []
        for line in self.connections():
            if " as " in line and "New client connected" in line:
                out.append(line.split(" as ", 1)[1].split(" ", 1)[0])
        return out

    def write_config(self) -> Path:
        lines = [
            "per_listener_settings false",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.log_path}",
            "log_type all",
            "max_queued_messages 0",
            f"max_inflight_messages {self.max_inflight}",
            f"listener {self.port} 127.0.0.1",
        ]
        if os.geteuid() == 0:
            # Started as root, mosquitto drops to user "mosquitto", who cannot read tmp_path.
            lines.insert(0, "user root")
        if self.tls:
            lines += [f"cafile {self.tls.ca_cert}", f"certfile {self.tls.server_cert}",
                      f"keyfile {self.tls.server_key}",
                      f"require_certificate {'true' if self.require_client_cert else 'false'}"]
        if self.passwords:
            pw_file = self.workdir / "passwords"
            pw_file.write_text("")
            for user, password in self.passwords.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pw_file), user, password],
                               check=True, capture_output=True)
            lines += [f"password_file {pw_file}", "allow_anonymous false"]
        else:
            lines.append("allow_anonymous true")
        if self.acl is not None:
            acl_file = self.workdir / "acl"
            acl_file.write_text(self.acl)
            lines.append(f"acl_file {acl_file}")
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self, timeout: float = 10.0) -> "MosquittoBroker":
        """Start mosquitto and wait until its log says it is running (listeners open).

        Readiness comes from the broker's log, not a probe connection, so the log of
        connections (`connections()`) holds only what the code under test opened.
        """
        conf = self.write_config()
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.process = subprocess.Popen([self.binary, "-c", str(conf)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                log = self.log_path.read_text() if self.log_path.exists() else ""
                raise RuntimeError(f"mosquitto exited with {self.process.returncode} at start "
                                   f"(port {self.port}): {err} {log[-2000:]}")
            if self._log_since(offset).count(" running") and self._listening():
                return self
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"mosquitto did not accept connections on 127.0.0.1:{self.port} "
                           f"within {timeout}s")

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(offset)
                return fh.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _listening(self) -> bool:
        """Whether the port is bound (a bind that fails makes mosquitto exit instead)."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", self.port))
            except OSError:
                return True
            return False

    def update_acl(self, acl: str) -> None:
        """Replace the ACL and make the running broker reload it (SIGHUP)."""
        self.acl = acl
        self.write_config()
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> "MosquittoBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --- subscriber -------------------------------------------------------------------------

@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int
    user_properties: tuple[tuple[str, str], ...]
    message_expiry_interval: int | None
    properties: dict = field(default_factory=dict, compare=False)   # every MQTT 5 property


class Collector:
    """A subscriber on `#` that keeps every message; for asserting what left the unit.

    It subscribes before the test publishes anything, so "received nothing" means the
    broker routed nothing to anyone, not that the subscriber came late.
    """

    def __init__(self, broker: MosquittoBroker, topic: str = "#", username: str | None = None,
                 password: str | None = None, client_id: str | None = None,
                 persistent: bool = False) -> None:
        self.broker = broker
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        # persistent: a fixed client id and a session that outlives the connection, so a
        # broker restarted with persistence keeps queueing for this subscriber.
        self.persistent = persistent
        if persistent and not client_id:
            client_id = f"collector-{broker.port}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "",
                                  protocol=mqtt.MQTTv5)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 2)
        if username:
            self.client.username_pw_set(username, password)
        if broker.tls:
            ctx = ssl.create_default_context(cafile=str(broker.tls.ca_cert))
            ctx.load_cert_chain(str(broker.tls.client_cert), str(broker.tls.client_key))
            self.client.tls_set_context(ctx)
        self.topic = topic
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_message(self, client, userdata, msg) -> None:
        props = getattr(msg, "properties", None)
        user_props = tuple(getattr(props, "UserProperty", []) or []) if props else ()
        expiry = getattr(props, "MessageExpiryInterval", None) if props else None
        with self._cond:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain),
                                          msg.qos, user_props, expiry,
                                          props.json() if props else {}))
            self._cond.notify_all()

    def start(self, timeout: float = 10.0) -> "Collector":
        from paho.mqtt.properties import Properties
        from paho.mqtt.packettypes import PacketTypes
        props = None
        if self.persistent:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", self.broker.port, clean_start=not self.persistent,
                            properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            raise TimeoutError(f"subscriber on {self.broker.url} got no SUBACK within {timeout}s")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def wait_for(self, predicate, timeout: float = 30.0) -> bool:
        """Wait until predicate(messages) is true; returns whether it became true."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.5))
            return True

    def wait_count(self, count: int, timeout: float = 30.0) -> bool:
        return self.wait_for(lambda msgs: len(msgs) >= count, timeout)

    def snapshot(self) -> list[Received]:
        with self._cond:
            return list(self.messages)

    def __enter__(self) -> "Collector":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
