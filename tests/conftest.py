"""Shared pytest fixtures.

Keep this file to fixtures that more than one area uses; area-specific helpers live in
their own modules under tests/ and are imported from here. Sections: MQTT brokers, signing
keys, models.
"""
from __future__ import annotations

import itertools
import re
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers.paths import MODELS
from mqtt_broker import Collector, MosquittoBroker, TlsFiles, find_mosquitto, make_tls_files

# --- MQTT brokers (tests/mqtt_broker.py) ---------------------------------------------------

requires_mosquitto = pytest.mark.skipif(
    find_mosquitto() is None,
    reason="mosquitto is not installed (apt-get install mosquitto); broker tests need a real broker")


def _skip_without_mosquitto() -> None:
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto); "
                    "broker tests need a real broker")


def _integration_only(request: pytest.FixtureRequest) -> None:
    """A broker or database reached by a test not marked integration (e.g. through
    request.getfixturevalue, which the marking at collection cannot see) would run in
    `make test-fast`: fail, saying how to mark it."""
    if request.node.get_closest_marker("integration") is None:
        pytest.fail(f"{request.node.nodeid} starts a broker or a database but is not marked integration: "
                    "mark it (a fixture parameter: pytest.param(..., marks=pytest.mark.integration))")


@pytest.fixture
def mosquitto(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MosquittoBroker]:
    """A TLS mosquitto (its own throw-away PKI, anonymous) on a free 127.0.0.1 port: put
    `mosquitto.url` and `mosquitto.pin` in the policy."""
    _integration_only(request)
    _skip_without_mosquitto()
    broker = MosquittoBroker(tmp_path / "mosquitto").start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    """A throw-away CA with a server cert for 127.0.0.1 and a client cert."""
    return make_tls_files(tmp_path / "pki")


@pytest.fixture
def broker_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., MosquittoBroker]]:
    """Start any number of brokers: factory(tls=..., acl=..., passwords=..., plain=..., ...).

    Each is TLS with its own PKI unless given `tls=` (or `plain=True`); every broker started
    through the factory is stopped at teardown.
    """
    _integration_only(request)
    _skip_without_mosquitto()
    started: list[MosquittoBroker] = []
    counter = itertools.count()

    def make(**kwargs) -> MosquittoBroker:
        broker = MosquittoBroker(tmp_path / f"broker{next(counter)}", **kwargs).start()
        started.append(broker)
        return broker

    try:
        yield make
    finally:
        for broker in started:
            broker.stop()


@pytest.fixture
def tls_broker_factory(broker_factory, tmp_path: Path) -> Callable[..., MosquittoBroker]:
    """factory(**kwargs): a TLS broker with its own fresh PKI unless `tls=` is given."""
    counter = itertools.count()

    def make(**kwargs) -> MosquittoBroker:
        if "tls" not in kwargs:
            kwargs["tls"] = make_tls_files(tmp_path / f"pki{next(counter)}")
        return broker_factory(**kwargs)

    return make


@pytest.fixture
def collector_factory() -> Iterator[Callable[..., Collector]]:
    """factory(broker, **kwargs): a started subscriber on `#` that keeps every message."""
    started: list[Collector] = []

    def make(broker: MosquittoBroker, **kwargs) -> Collector:
        collector = Collector(broker, **kwargs).start()
        started.append(collector)
        return collector

    try:
        yield make
    finally:
        for collector in started:
            collector.stop()


# --- signing keys (firmware_config/policies/test-keys) ------------------------------------------

POLICIES = Path(__file__).resolve().parents[1] / "firmware_config" / "policies"


@pytest.fixture(scope="session")
def dept():
    """The department's TEST-ONLY signing key."""
    from agent.policy.signing import load_private_key
    return load_private_key(POLICIES / "test-keys" / "department-TEST-ONLY.key")


@pytest.fixture(scope="session")
def trusted(dept):
    """The unit's trusted keys: only the department's."""
    from agent.policy.signing import key_id
    return {key_id(dept.public_key()): dept.public_key()}


# --- models (helpers/paths.py: MODELS) --------------------------------------------------------


@pytest.fixture()
def ocr_models(tmp_path) -> Path:
    """A private copy of the OCR model files with a manifest naming only the OCR (no detector)."""
    from agent.vision.models import load_manifest
    entry = load_manifest(MODELS)["models"]["plate_ocr"]
    out = tmp_path / "models"
    out.mkdir()
    for key, value in entry.items():
        if key == "file" or key.startswith("file_"):
            shutil.copyfile(MODELS / value, out / value)
    (out / "manifest.json").write_text(json.dumps({"models": {"plate_ocr": entry}}))
    return out


# --- delivery stack (tests/helpers/soak.py: outbox + policy rig + audit, no broker) --------------

@pytest.fixture
def stack(tmp_path: Path):
    """A real outbox, policy store and audit log in a temp state dir; closed at teardown."""
    from helpers.soak import build_stack
    s = build_stack(tmp_path / "state")
    yield s
    s.outbox.close()
    s.audit.close()


# --- PostgreSQL (tests/pg_server.py): never skipped silently --------------------------------------

@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL server for the session; fails (not skips) if it is not installed."""
    from pg_server import PostgresServer, find_pg_bin
    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.fail("PostgreSQL is not installed (initdb/pg_ctl not found): run "
                    "tools/install_system_deps.sh (Debian package 'postgresql')")
    server = PostgresServer(bin_dir).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_dsn(request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    _integration_only(request)
    postgres_server = request.getfixturevalue("postgres_server")
    return postgres_server.new_database()


# --- markers: tests that start brokers or subprocesses are integration tests ------------------

BROKER_FIXTURES = frozenset({"mosquitto", "broker_factory", "tls_broker_factory",
                             "collector_factory", "postgres_server", "postgres_dsn"})
_SUBPROCESS = ("subprocess.", "Popen", "pty.", "sys.executable", "os.fork")


def _module_calls(module) -> tuple[dict[str, bool], dict[str, set[str]]]:
    """For each module-level function and class of `module`: whether its own source starts a
    process, and which of the module's other functions and classes it names. Read once per
    module (re-reading the module per test made collection quadratic: seconds of `test-fast`)."""
    import ast
    import inspect
    if module.__name__ not in _MODULE_CALLS:
        try:
            source = inspect.getsource(module)
        except (OSError, TypeError):
            source = ""
        lines = source.splitlines(keepends=True)
        bodies = {node.name: "".join(lines[node.lineno - 1:node.end_lineno])
                  for node in ast.parse(source).body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        starts = {name: any(pattern in body for pattern in _SUBPROCESS) for name, body in bodies.items()}
        names = {name: set(re.findall(r"\w+", body)) & bodies.keys() for name, body in bodies.items()}
        _MODULE_CALLS[module.__name__] = (starts, names)
    return _MODULE_CALLS[module.__name__]


_MODULE_CALLS: dict[str, tuple[dict[str, bool], dict[str, set[str]]]] = {}


def _starts_subprocess(function) -> bool:
    """Whether a test's own source, or a module-level function it names (followed within
    its module), starts a process."""
    import inspect
    module = inspect.getmodule(function)
    if module is None:
        return False
    starts, names = _module_calls(module)
    seen: set[str] = set()
    todo = [function.__name__]
    while todo:
        name = todo.pop()
        if name in seen or name not in starts:
            continue
        seen.add(name)
        if starts[name]:
            return True
        todo.extend(names[name] - seen)
    return False


HEAVY_EXAMPLES = 100     # a property test drawing more examples than this is marked slow


def pytest_collection_modifyitems(config, items) -> None:
    """Mark integration every test that starts a broker (a broker fixture) or a process
    (seen in its source), and slow every property test of more than HEAVY_EXAMPLES
    examples, so `make test-fast` (-m "not integration and not slow") runs only what
    needs neither; `make test` runs everything."""
    cache: dict = {}
    for item in items:
        function = getattr(item, "function", None)
        if function is None:
            continue
        drawn = getattr(function, "_hypothesis_internal_use_settings", None)
        if drawn is not None and drawn.max_examples > HEAVY_EXAMPLES:
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("integration"):
            continue
        if BROKER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
            continue
        if function not in cache:
            cache[function] = _starts_subprocess(function)
        if cache[function]:
            item.add_marker(pytest.mark.integration)
