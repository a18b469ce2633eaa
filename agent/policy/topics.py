"""The one rule for what an MQTT topic a read may be published to looks like.

Shared by the policy parser (a bad topic is refused when the policy is installed, naming the
destination) and the delivery stage (checked again when a link is built), so the two can
never disagree. Topics come from the signed policy only, never from plate text.
"""
from __future__ import annotations

MAX_TOPIC_BYTES = 65535


def validate_topic(topic: str) -> str:
    """Return `topic` if it is a valid, fixed publish topic; raise ValueError saying why not.

    No wildcards (`+`, `#`), no `$` prefix (broker-internal topics such as `$SYS`), no empty
    levels (leading, trailing or `//`), no NUL, at most 65535 UTF-8 bytes.
    """
    if not isinstance(topic, str) or not topic:
        raise ValueError(f"topic {topic!r}: must be a non-empty string")
    if "+" in topic or "#" in topic:
        raise ValueError(f"topic {topic!r}: must not contain MQTT wildcards (+, #)")
    if topic.startswith("$"):
        raise ValueError(f"topic {topic!r}: must not start with '$' (broker-internal topics)")
    if "\x00" in topic:
        raise ValueError(f"topic {topic!r}: must not contain NUL")
    if any(level == "" for level in topic.split("/")):
        raise ValueError(f"topic {topic!r}: must not have empty levels (leading, trailing or '//')")
    try:
        size = len(topic.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValueError(f"topic {topic!r}: is not valid UTF-8 ({exc.reason})") from None
    if size > MAX_TOPIC_BYTES:
        raise ValueError(f"topic of {size} bytes: longer than {MAX_TOPIC_BYTES} bytes")
    return topic
