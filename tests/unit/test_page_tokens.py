"""Page tokens of every list: one position codec (keyset pagination)."""

import base64
import json
import uuid
from datetime import UTC, datetime

import pytest

from voicehooks.errors import ProblemError
from voicehooks.page_tokens import (
    decode_page_token,
    decode_position,
    decode_sequence_token,
    encode_page_token,
    encode_position,
    encode_sequence_token,
)

AT = datetime(2026, 12, 1, 12, 30, tzinfo=UTC)
ID = uuid.UUID("6f1c1b1e-8c2a-4a51-9f3b-2d6a2b1f0c11")


def _token(raw: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")


def test_positions_round_trip_for_every_list():
    assert decode_page_token(encode_page_token(AT, ID)) == (AT, ID)
    assert decode_sequence_token(encode_sequence_token(42, AT)) == (42, AT)
    assert decode_sequence_token(encode_sequence_token(42)) == (42, None)
    assert decode_position(encode_position(AT, 7), datetime, int) == (AT, 7)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-base64!",
        _token({"a": 1}),
        _token([True]),
        _token(["2026-12-01T12:30:00"]),
        _token([1, 2, 3]),
    ],
    ids=["empty", "garbage", "object", "bool", "naive time", "too long"],
)
def test_a_token_of_no_list_is_the_clients_mistake(token):
    with pytest.raises(ProblemError):
        decode_sequence_token(token)
    with pytest.raises(ProblemError):
        decode_page_token(token)


def test_a_token_of_another_list_is_refused():
    with pytest.raises(ProblemError):
        decode_page_token(encode_sequence_token(42, AT))
    with pytest.raises(ValueError):
        decode_position(encode_page_token(AT, ID), datetime, int)
