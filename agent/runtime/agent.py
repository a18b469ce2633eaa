"""The agent's main loop: start the pipeline, answer signals, supervise, stop in order.

Signals only set flags; the work they ask for happens here, in the main thread:
SIGTERM/SIGINT stop within 5 s, SIGHUP re-reads the config (an invalid one is
refused and the running config kept) and re-installs the policy and hotlists.
"""
from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from agent.config.loader import ConfigError
from agent.config.reference import redacted
from agent.config.schema import DeviceConfig
from agent.control.hooks import AgentHooks
from agent.runtime.logs import configure_logging, set_level
from agent.policy.errors import PolicyError
from agent.runtime.preflight import load_usable_config
from agent.runtime.pipeline import Pipeline, build_pipeline, install_policy_and_hotlists, reload_keys
from agent.runtime.watchdog import HealthNotifier

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CONFIG = 78         # EX_CONFIG: the config can never work (RestartPreventExitStatus=78)
EXIT_FATAL = 70          # a stage kept crashing: let systemd restart the process
EXIT_LOST = 74           # EX_IOERR: stopped, but the disk refused reads or audit records (counts logged)
EXIT_RESTART = 75        # the technician asked for a restart (console `restart`): systemd starts it again
SHUTDOWN_BUDGET_S = 4.5  # SIGTERM to exit within 5 s
SETTLE_LIMIT_S = 30.0    # exit_at_end: longest wait for queued deliveries after the source ends

# Settings a SIGHUP applies at once; every other change needs a restart (logged as such).
LIVE_KEYS = {"logging", "policy"}


class Agent:
    def __init__(self, config_path: Path, config: DeviceConfig, recognizer: Any = None,
                 health: dict[str, float] | None = None):
        self.config_path = config_path
        self.config = config
        self.recognizer = recognizer  # None: load the ONNX models named by the config
        self.health_options = health or {}  # HealthNotifier overrides (tests: shorter stall and status)
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._restart = threading.Event()
        self.pipeline: Pipeline | None = None

    def request_stop(self, *_: Any) -> None:
        self._stop.set()

    def request_reload(self, *_: Any) -> None:
        self._reload.set()

    def request_restart(self) -> None:
        self._restart.set()
        self._stop.set()

    def run(self) -> int:
        self.pipeline = build_pipeline(self.config, recognizer=self.recognizer)
        self.pipeline.hooks = AgentHooks(reload=self.request_reload, restart=self.request_restart)
        self.pipeline.start()
        health = HealthNotifier(self.pipeline.beating, self.pipeline.stats, **self.health_options)
        health.ready()
        ended_at: float | None = None
        code = EXIT_OK
        while not self._stop.wait(0.2):
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            broken = self.pipeline.fatal()
            if broken is not None:
                log.critical("agent exiting stage=%s reason=too many restarts last_error=%s",
                             broken.name, broken.last_error)
                code = EXIT_FATAL
                break
            health.tick()  # WATCHDOG=1 only while every stage makes progress
            if self.config.source.exit_at_end and self.pipeline.capture.source_ended.is_set():
                ended_at = ended_at or time.monotonic()
                if self.pipeline.reads_settled() or time.monotonic() - ended_at > SETTLE_LIMIT_S:
                    log.info("source ended and reads settled; stopping")
                    break
        health.stopping()
        report = self.pipeline.shutdown(SHUTDOWN_BUDGET_S)  # logs clean=False if a stage overran
        if code == EXIT_OK and not report.complete:
            return EXIT_LOST   # also restarted by systemd; the stop line lists what was lost
        if code == EXIT_OK and self._restart.is_set():
            log.info("agent stopped for a restart requested at the console")
            return EXIT_RESTART
        return code

    def reload(self) -> None:
        """Re-read the config and every key file it names; refuse an invalid one (or a key
        file that cannot be used) and keep running on the old config and keys.

        The files the config names are checked as `run` checks them at start: a reload the
        unit could not start with is refused now, where the operator sees it, instead of
        being kept until the next restart refuses to start (exit 78)."""
        try:
            new = load_usable_config(self.config_path)
        except ConfigError as exc:
            self._refuse_reload([str(p) for p in exc.problems])
            return
        try:
            reload_keys(self.pipeline, new)
        except PolicyError as exc:
            self._refuse_reload([exc.detail])
            return
        changed = _changed_sections(self.config, new)
        set_level(new.logging.level)
        install_policy_and_hotlists(new, self.pipeline.policies, self.pipeline.hotlists, time.time())
        needs_restart = sorted(set(changed) - LIVE_KEYS)
        if needs_restart:
            log.warning("reload: changes need a restart to apply sections=%s", ",".join(needs_restart))
        self.pipeline.audit.record("config.changed", path=str(self.config_path), sections=changed,
                                   pending_restart=needs_restart)
        self.config = dataclasses.replace(self.config, logging=new.logging, policy=new.policy)
        log.info("reload done sections=%s", ",".join(changed) or "none")


    def _refuse_reload(self, problems: list[str]) -> None:
        log.error("reload refused config=%s problems=%d; keeping the running config and keys",
                  self.config_path, len(problems))
        for problem in problems:
            log.error("reload refused config=%s problem=%s", self.config_path, problem)
        self.pipeline.audit.record("config.refused", path=str(self.config_path), problems=problems)
        self.pipeline.audit.flush()


def _changed_sections(old: DeviceConfig, new: DeviceConfig) -> list[str]:
    old_plain, new_plain = redacted(old), redacted(new)
    return sorted(k for k in new_plain if old_plain.get(k) != new_plain[k])


def run_agent(config_path: Path, log_level: str | None = None) -> int:
    try:
        config = load_usable_config(config_path)
    except ConfigError as exc:
        # One line per problem, each complete on its own (the journal shows lines, not blocks).
        for problem in exc.problems:
            print(f"plategate: refusing to start: {exc.source}: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(log_level or config.logging.level)
    agent = Agent(config_path, config)
    signal.signal(signal.SIGTERM, agent.request_stop)
    signal.signal(signal.SIGINT, agent.request_stop)
    signal.signal(signal.SIGHUP, agent.request_reload)
    # A file-size limit (systemd LimitFSIZE=) then fails a write with EFBIG, handled like a
    # full disk, instead of killing the agent with SIGXFSZ.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        return agent.run()
    except Exception:
        log.exception("agent failed %s config=%s", "while running" if agent.pipeline else "to start",
                      config_path)
        return EXIT_FATAL
