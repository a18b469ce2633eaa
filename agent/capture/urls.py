"""Stream URLs: credentials from the config go into the URL only when it is opened, and every
URL that is logged, printed or reported has them redacted."""
from __future__ import annotations

import urllib.parse


def with_credentials(url: str, username: str | None, password: str | None) -> str:
    """`url` with `username:password@` added (percent-encoded); unchanged without a user name."""
    if not username:
        return url
    parts = urllib.parse.urlsplit(url)
    userinfo = urllib.parse.quote(username, safe="")
    if password:
        userinfo += ":" + urllib.parse.quote(password, safe="")
    netloc = f"{userinfo}@{parts.hostname or ''}"
    if ":" in (parts.hostname or ""):  # IPv6 literal
        netloc = f"{userinfo}@[{parts.hostname}]"
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact(url: str) -> str:
    """`url` with any user name and password replaced by `***`, and query values too (tokens)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(f"{pair.split('=', 1)[0]}=***" if "=" in pair else pair
                     for pair in parts.query.split("&")) if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))
