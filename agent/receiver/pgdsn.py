"""A libpq connection string, read into the keyword arguments pg8000 connects with.

pg8000 (BSD-3-Clause, pure Python) takes keywords, not a DSN, while operators write the
DSN forms every PostgreSQL tool knows: ``postgresql://user:pass@host:port/db?sslmode=require``
or ``host=db port=5432 dbname=plategate user=rx``. Only the parameters below are understood;
any other is refused by name rather than silently ignored (an ignored ``sslmode`` would mean
an unencrypted connection the operator did not ask for). As with libpq, a password missing
from the DSN comes from ``PGPASSWORD``.
"""
from __future__ import annotations

import os
import re
import ssl
from urllib.parse import parse_qsl, unquote, urlsplit

SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
KNOWN = frozenset({"host", "hostaddr", "port", "dbname", "user", "password", "sslmode",
                   "sslrootcert", "sslcert", "sslkey", "application_name", "connect_timeout"})
_PAIR = re.compile(r"\s*([A-Za-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']*)")


class DsnError(ValueError):
    """The connection string cannot be used; the message names the part that is wrong."""


def parse_dsn(dsn: str) -> dict[str, str]:
    """libpq parameters of a URL or key=value DSN (values as strings; URL parts unquoted)."""
    dsn = dsn.strip()
    if dsn.startswith(("postgresql://", "postgres://")):
        return _parse_url(dsn)
    params: dict[str, str] = {}
    pos = 0
    while pos < len(dsn):
        match = _PAIR.match(dsn, pos)
        if not match:
            raise DsnError(f"storage.dsn: cannot read {dsn[pos:].strip()[:40]!r} "
                           "(expected postgresql://... or key=value pairs)")
        value = match.group(2)
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[match.group(1)] = value
        pos = match.end()
        while pos < len(dsn) and dsn[pos].isspace():
            pos += 1
    return params


def _parse_url(dsn: str) -> dict[str, str]:
    try:
        url = urlsplit(dsn)
        port = url.port
    except ValueError as exc:
        raise DsnError(f"storage.dsn: {exc}") from exc
    if "," in (url.netloc or ""):
        raise DsnError("storage.dsn: several hosts in one DSN are not supported; "
                       "put a load balancer or one host here")
    params: dict[str, str] = {}
    if url.hostname:
        params["host"] = unquote(url.hostname)
    if port is not None:
        params["port"] = str(port)
    if url.username:
        params["user"] = unquote(url.username)
    if url.password:
        params["password"] = unquote(url.password)
    if url.path.strip("/"):
        params["dbname"] = unquote(url.path.lstrip("/"))
    params.update(parse_qsl(url.query, keep_blank_values=True))
    return params


def connect_kwargs(dsn: str) -> dict:
    """pg8000.dbapi.connect() keywords for `dsn`; DsnError names an unusable parameter."""
    params = parse_dsn(dsn)
    unknown = sorted(set(params) - KNOWN)
    if unknown:
        raise DsnError(f"storage.dsn: parameter {unknown[0]!r} is not supported "
                       f"(supported: {', '.join(sorted(KNOWN))})")
    kwargs: dict = {"user": params.get("user") or os.environ.get("PGUSER") or _login_name(),
                    "database": params.get("dbname") or None,
                    "application_name": params.get("application_name", "plategate-receiver")}
    password = params.get("password") or os.environ.get("PGPASSWORD")
    if password:
        kwargs["password"] = password
    host = params.get("hostaddr") or params.get("host") or "localhost"
    port = params.get("port", "5432")
    if not port.isdigit():
        raise DsnError(f"storage.dsn: port {port!r} is not a number")
    if host.startswith("/"):       # a directory: the server's Unix socket, as in libpq
        kwargs["unix_sock"] = os.path.join(host, f".s.PGSQL.{port}")
    else:
        kwargs["host"], kwargs["port"] = host, int(port)
    if "connect_timeout" in params:
        try:
            kwargs["timeout"] = float(params["connect_timeout"]) or None
        except ValueError as exc:
            raise DsnError(f"storage.dsn: connect_timeout {params['connect_timeout']!r} "
                           "is not a number") from exc
    context = _ssl_context(params)
    if context is not None and "unix_sock" not in kwargs:
        kwargs["ssl_context"] = context
    return kwargs


def _ssl_context(params: dict[str, str]) -> ssl.SSLContext | None:
    """TLS as sslmode asks. 'prefer'/'allow' (libpq's fallback to clear text) are refused:
    a receiver either needs TLS or it does not, and the DSN must say which."""
    mode = params.get("sslmode", "disable" if "sslrootcert" not in params else "verify-full")
    if mode not in SSLMODES:
        raise DsnError(f"storage.dsn: sslmode {mode!r} is not one of {', '.join(SSLMODES)}")
    if mode in ("allow", "prefer"):
        raise DsnError(f"storage.dsn: sslmode={mode} may fall back to clear text; "
                       "say sslmode=disable or sslmode=require/verify-ca/verify-full")
    if mode == "disable":
        return None
    context = ssl.create_default_context(cafile=params.get("sslrootcert"))
    context.check_hostname = mode == "verify-full"
    if mode == "require" and "sslrootcert" not in params:   # libpq: encrypted, not verified
        context.verify_mode = ssl.CERT_NONE
    if "sslcert" in params:
        context.load_cert_chain(params["sslcert"], params.get("sslkey"))
    return context


def _login_name() -> str:
    import getpass
    return getpass.getuser()
