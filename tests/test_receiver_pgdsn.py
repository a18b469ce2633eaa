"""The PostgreSQL DSN forms operators write reach pg8000 as the right keywords; the rest is refused."""
from __future__ import annotations

import ssl

import pytest

from agent.receiver.pgdsn import DsnError, connect_kwargs


def test_url_and_keyword_forms_give_the_same_connection():
    url = connect_kwargs("postgresql://rx:s%40cret@db.example:6432/plategate?application_name=rx1")
    pairs = connect_kwargs("host=db.example port=6432 dbname=plategate user=rx "
                           "password='s@cret' application_name=rx1")
    assert url == pairs
    assert url["host"] == "db.example" and url["port"] == 6432 and url["password"] == "s@cret"
    assert url["database"] == "plategate" and "ssl_context" not in url


def test_socket_directory_and_password_from_environment(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "from-env")
    kwargs = connect_kwargs("host=/var/run/postgresql dbname=plategate user=rx")
    assert kwargs["unix_sock"] == "/var/run/postgresql/.s.PGSQL.5432"
    assert kwargs["password"] == "from-env" and "host" not in kwargs


def test_sslmodes_map_to_verification():
    full = connect_kwargs("postgresql://rx@db/plategate?sslmode=verify-full")["ssl_context"]
    assert full.check_hostname and full.verify_mode == ssl.CERT_REQUIRED
    require = connect_kwargs("postgresql://rx@db/plategate?sslmode=require")["ssl_context"]
    assert not require.check_hostname and require.verify_mode == ssl.CERT_NONE


@pytest.mark.parametrize("dsn, named", [
    ("postgresql://rx@db/plategate?sslmode=prefer", "sslmode=prefer"),
    ("postgresql://rx@db/plategate?sslmode=sometimes", "'sometimes'"),
    ("postgresql://rx@db/plategate?target_session_attrs=read-write", "'target_session_attrs'"),
    ("postgresql://rx@a,b/plategate", "several hosts"),
    ("host=db port=abc", "port 'abc'"),
    ("host=db 'broken", "'broken"),
])
def test_unusable_dsn_is_refused_naming_the_part(dsn, named):
    with pytest.raises(DsnError, match="storage.dsn") as caught:
        connect_kwargs(dsn)
    assert named in str(caught.value)
