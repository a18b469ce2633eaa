"""Rewrite the README's configuration reference from the schema (tests fail when it is stale)."""
from __future__ import annotations

import re
from pathlib import Path

from agent.config.reference import reference_markdown

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"


def main() -> None:
    text = README.read_text()
    new = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: START + reference_markdown() + END,
                 text, flags=re.S)
    README.write_text(new)
    print("README config reference", "updated" if new != text else "already current")


if __name__ == "__main__":
    main()
