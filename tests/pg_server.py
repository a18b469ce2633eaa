"""A real PostgreSQL server for tests: initdb + pg_ctl in a temp dir, on a free 127.0.0.1 port.

Debian's `postgresql` package (tools/install_system_deps.sh) provides the binaries under
/usr/lib/postgresql/<version>/bin. PostgreSQL refuses to run as root, so as root the server
runs as the `postgres` user (the package creates it) in a directory it owns. The server is
never skipped silently: if the binaries are missing the fixture fails and says how to
install them.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def find_pg_bin() -> Path | None:
    """The folder holding initdb and pg_ctl (newest Debian version first), or None."""
    for name in ("initdb", "pg_ctl"):
        found = shutil.which(name)
        if found and Path(found).resolve().parent.joinpath("pg_ctl").exists():
            return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PostgresServer:
    bin_dir: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="plategate-pg-")))
    port: int = field(default_factory=_free_port)
    user: str = "plategate"
    _counter: int = 0

    def _as_owner(self) -> dict:
        """subprocess kwargs that run a command as the postgres user when we are root."""
        if os.geteuid() != 0:
            return {}
        pw = pwd.getpwnam("postgres")

        def demote() -> None:
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
        return {"preexec_fn": demote}

    def start(self) -> "PostgresServer":
        data = self.root / "data"
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        run = dict(check=True, capture_output=True, text=True, **self._as_owner())
        subprocess.run([str(self.bin_dir / "initdb"), "-D", str(data), "-U", self.user, "-A", "trust",
                        "-E", "UTF8", "--no-locale"], **run)
        subprocess.run([str(self.bin_dir / "pg_ctl"), "-D", str(data), "-l", str(self.root / "log"),
                        "-w", "-t", "60", "-o",
                        f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                        "-c max_connections=50", "start"], **run)
        return self

    def stop(self) -> None:
        subprocess.run([str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast",
                        "-w", "stop"], capture_output=True, **self._as_owner())
        shutil.rmtree(self.root, ignore_errors=True)

    def postmaster_pid(self) -> int:
        return int((self.root / "data" / "postmaster.pid").read_text().split()[0])

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh empty database; returns its DSN."""
        import psycopg
        self._counter += 1
        name = f"t{os.getpid()}_{self._counter}_{int(time.time() * 1000) % 100000}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)
