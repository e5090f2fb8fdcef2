"""The body of a delivery is compact JSON exactly as the stdlib writes it: what receivers that
re-serialize compare against (voicehooks.receiver tells a re-encoded body by it)."""

import json

from hypothesis import given
from hypothesis import strategies as st

from voicehooks.ingestion.service import delivery_body
from voicehooks.voice import SERVICE

# Any text, lone surrogates included; integers beyond 64 bits; finite floats.
_TEXT = st.text(st.characters(exclude_categories=()))
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda children: st.lists(children) | st.dictionaries(_TEXT, children),
    max_leaves=30,
)


@given(st.dictionaries(_TEXT, _JSON))
def test_the_body_is_the_stdlib_compact_encoding(payload):
    expected = json.dumps(
        {"service": SERVICE, "event": "voice.inbound", "payload": payload},
        ensure_ascii=False,
        separators=(",", ":"),
        allow_nan=False,
    )
    assert delivery_body("voice.inbound", payload) == expected
