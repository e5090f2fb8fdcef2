"""README.md's code blocks, as the tests run them.

Every fenced block but the first (install and run, install and test) is marked on the line
before it with `<!-- readme-test: NAME -->`, and a test runs the block of each name
(tests/operations/test_readme.py checks that each one is marked and each name is run). The
tests change only the ports of what they run (8000 and 9000 become free ones) and, for the
production blocks, the example database URL; nothing else.
"""

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
MARKER = re.compile(r"^<!-- readme-test: ([a-z0-9-]+) -->$")
FENCE = re.compile(r"^```(\S*)\s*$")


@dataclass(frozen=True)
class Block:
    name: str | None
    language: str
    code: str
    line: int  # 1-based line of the opening fence


def blocks(text: str | None = None) -> list[Block]:
    lines = (README.read_text() if text is None else text).splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        before = next((line for line in reversed(lines[:index]) if line.strip()), "")
        marker = MARKER.match(before.strip())
        found.append(
            Block(
                marker.group(1) if marker else None,
                opening.group(1),
                "\n".join(lines[index + 1 : end]) + "\n",
                index + 1,
            )
        )
        index = end + 1
    return found


def block(name: str) -> Block:
    (named,) = [found for found in blocks() if found.name == name]
    return named


def localize(code: str, *, api: int = 8000, listener: int = 9000) -> str:
    """The README's commands on other ports: 8000 (the API) and 9000 (the receiver)."""
    code = code.replace("127.0.0.1:8000", f"127.0.0.1:{api}")
    code = code.replace("127.0.0.1:9000", f"127.0.0.1:{listener}")
    code = re.sub(r"--port 8000\b", f"--port {api}", code)
    # Commands that rely on the default ports get them said.
    code = re.sub(r"\b(voicehooks (?:serve|api))\b(?![^\n]*--port)", rf"\1 --port {api}", code)
    code = re.sub(r"\b(voicehooks listen)\b(?![^\n]*--port)", rf"\1 --port {listener}", code)
    return re.sub(
        r"\b(voicehooks trigger)\b(?![^\n]*--url)", rf"\1 --url http://127.0.0.1:{api}", code
    )
