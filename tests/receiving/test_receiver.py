"""SPEC §7: `voicehooks.receiver.verify` over fixed vectors, rotation, every reason to refuse,
the header objects of the usual frameworks, and an import that pulls in no server dependency."""

import contextlib
import email.message
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicehooks.dispatch.signing import bird_signature, signature_headers
from voicehooks.receiver import InvalidSignature, verify

SOURCE = Path(__file__).resolve().parents[2] / "src"

# Bird's documented vector (messagebird-signature).
BIRD_KEY = "KeV+/HGoIQrxuE5YPCRR6AuQOJveldYNNhbVi1i22qk="
BIRD_TIMESTAMP = "1719823259"
BIRD_URL = "https://example.com/webhook"
BIRD_BODY = b'{"service":"channels","event":"voice.outbound"}'
BIRD_SIGNATURE = "2rAwcZQnt5d1tgJLtoTRhVUHzqDxSItH1Gg/3xG6wyc="

# Standard Webhooks vectors, computed by the `standardwebhooks` package with
# Webhook(key.encode()).sign(...): an ASCII key and a non-ASCII one (its UTF-8 bytes).
DELIVERY_ID = "8f9ad0c4-7a2e-4c7e-9f55-2b8e3d7c1a60"
BODY = (
    b'{"service":"channels","event":"voice.inbound","payload":{"id":"call-1",'
    b'"channelId":"b827924e-9789-4c2f-a4d5-b352175354f6","status":"ringing"}}'
)
KEY = "mysecretkey-of-my-own"
KEY_SIGNATURE = "v1,uxF+ImFdxBKH6RflJsS4GbXnJ3PUl6/Mumr7EBlnkms="
UNICODE_KEY = "clé-secrète-ü-0001"
UNICODE_KEY_SIGNATURE = "v1,c3p3aBuD8EL3dTYT2/Bu+X4T1xEEKqT2b6f+seUxAd4="


def standard_headers(signature: str = KEY_SIGNATURE, timestamp: str = BIRD_TIMESTAMP) -> dict:
    return {
        "webhook-id": DELIVERY_ID,
        "webhook-timestamp": timestamp,
        "webhook-signature": signature,
    }


def fresh(
    body: bytes = BODY, *, key: str = KEY, previous: tuple[str, ...] = (), url: str = BIRD_URL
) -> dict[str, str]:
    """Headers of a delivery signed now, as the dispatcher signs it."""
    return signature_headers(
        delivery_id=DELIVERY_ID,
        timestamp=int(time.time()),
        url=url,
        body=body,
        signing_key=key,
        previous_keys=previous,
    )


def refused(body, headers, **options) -> InvalidSignature:
    with pytest.raises(InvalidSignature) as caught:
        verify(body, headers, **options)
    assert isinstance(caught.value, ValueError)
    assert str(caught.value)
    return caught.value


# -- fixed vectors ------------------------------------------------------------------------------


def test_birds_documented_vector():
    # The key is used as its UTF-8 string bytes (SPEC §4), not base64-decoded.
    assert bird_signature(BIRD_KEY, BIRD_TIMESTAMP, BIRD_URL, BIRD_BODY) == BIRD_SIGNATURE
    headers = {
        # The Standard Webhooks entry for this body and key, so that the delivery is whole.
        **signature_headers(
            delivery_id=DELIVERY_ID,
            timestamp=int(BIRD_TIMESTAMP),
            url="https://elsewhere.example/",
            body=BIRD_BODY,
            signing_key=BIRD_KEY,
        ),
        "messagebird-signature": BIRD_SIGNATURE,
        "messagebird-request-timestamp": BIRD_TIMESTAMP,
    }
    event = verify(BIRD_BODY, headers, keys=BIRD_KEY, url=BIRD_URL, tolerance=None)
    assert event == {"service": "channels", "event": "voice.outbound"}

    tampered = {**headers, "messagebird-signature": "3" + BIRD_SIGNATURE[1:]}
    error = refused(BIRD_BODY, tampered, keys=BIRD_KEY, url=BIRD_URL, tolerance=None)
    assert error.reason == "url"


@pytest.mark.parametrize(
    ("key", "signature"), [(KEY, KEY_SIGNATURE), (UNICODE_KEY, UNICODE_KEY_SIGNATURE)]
)
def test_standard_webhooks_vectors(key, signature):
    event = verify(BODY, standard_headers(signature), keys=key, tolerance=None)
    assert event["payload"]["status"] == "ringing"
    assert verify(BODY.decode(), standard_headers(signature), keys=[key], tolerance=None) == event


def test_the_dispatchers_headers_verify_with_both_schemes():
    headers = fresh()
    assert verify(BODY, headers, keys=KEY, url=BIRD_URL)["event"] == "voice.inbound"


# -- rotation -----------------------------------------------------------------------------------


def test_rotation_any_key_verifies():
    headers = fresh(key="the-new-key-0001", previous=(KEY, "an-older-key-002"))
    assert len(headers["webhook-signature"].split(" ")) == 3
    for keys in (KEY, ["the-new-key-0001"], ["an-older-key-002"], ["unknown-key-1", KEY]):
        assert verify(BODY, headers, keys=keys)["service"] == "channels"
    assert refused(BODY, headers, keys=["unknown-key-1"]).reason == "no-match"


def test_birds_header_carries_only_the_new_key_during_a_rotation():
    headers = fresh(key="the-new-key-0001", previous=(KEY,))
    assert verify(BODY, headers, keys=["the-new-key-0001"], url=BIRD_URL)
    assert verify(BODY, headers, keys=[KEY, "the-new-key-0001"], url=BIRD_URL)
    error = refused(BODY, headers, keys=[KEY], url=BIRD_URL)
    assert error.reason == "url" and "new key" in str(error)


# -- every reason to refuse ---------------------------------------------------------------------


def test_a_body_altered_by_one_byte():
    altered = BODY.replace(b"ringing", b"rinGing")
    error = refused(altered, fresh(), keys=KEY)
    assert error.reason == "no-match"
    assert "body changed" in str(error) and "1 key given" in str(error)


def test_a_signature_from_another_key():
    error = refused(BODY, fresh(key="somebody-elses-key"), keys=[KEY, "and-another-one"])
    assert error.reason == "no-match" and "2 keys given" in str(error)


def test_a_re_serialized_body_is_named_as_such():
    reformatted = json.dumps(json.loads(BODY), indent=2)
    error = refused(reformatted, fresh(), keys=KEY)
    assert error.reason == "body-changed"
    assert "raw request body" in str(error)


@pytest.mark.parametrize(
    ("offset", "words"), [(-301, r"30[12] s old"), (302, r"30[12] s in the future")]
)
def test_a_timestamp_outside_the_tolerance(offset, words):
    stamp = int(time.time()) + offset
    headers = signature_headers(
        delivery_id=DELIVERY_ID, timestamp=stamp, url=BIRD_URL, body=BODY, signing_key=KEY
    )
    error = refused(BODY, headers, keys=KEY)
    assert error.reason == "timestamp"
    assert re.search(words, str(error)) and "tolerance of 300 s" in str(error)
    # Within a wider tolerance, or without the check, the same delivery verifies.
    assert verify(BODY, headers, keys=KEY, tolerance=400)
    assert verify(BODY, headers, keys=KEY, tolerance=None)


def test_a_timestamp_just_inside_the_tolerance():
    stamp = int(time.time()) - 299
    headers = signature_headers(
        delivery_id=DELIVERY_ID, timestamp=stamp, url=BIRD_URL, body=BODY, signing_key=KEY
    )
    assert verify(BODY, headers, keys=KEY, url=BIRD_URL)


@pytest.mark.parametrize("name", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_or_empty_standard_headers(name):
    headers = fresh()
    del headers[name]
    error = refused(BODY, headers, keys=KEY)
    assert error.reason == "missing-header" and f"header {name} is missing" in str(error)
    error = refused(BODY, {**fresh(), name: "  "}, keys=KEY)
    assert error.reason == "missing-header" and "empty" in str(error)


@pytest.mark.parametrize("name", ["messagebird-signature", "messagebird-request-timestamp"])
def test_missing_bird_headers_when_a_url_is_given(name):
    headers = fresh()
    del headers[name]
    assert verify(BODY, headers, keys=KEY)  # without url, Bird's headers are not needed
    error = refused(BODY, headers, keys=KEY, url=BIRD_URL)
    assert error.reason == "missing-header" and name in str(error)


def test_a_url_other_than_the_signed_one():
    error = refused(BODY, fresh(), keys=KEY, url=BIRD_URL + "/")
    assert error.reason == "url" and "exactly as registered" in str(error)


@pytest.mark.parametrize("stamp", ["soon", "-5", "1.5e9", "١٧١٩٨٢٣٢٥٩", "9" * 40, "+1719823259"])
def test_a_malformed_timestamp(stamp):
    error = refused(BODY, {**fresh(), "webhook-timestamp": stamp}, keys=KEY)
    assert error.reason == "malformed-header" and "Unix seconds" in str(error)


@pytest.mark.parametrize(
    "signature",
    [
        "v1",
        "v1,",
        "nonsense",
        "v2,abc v1a,xyz",
        ",,,, , ,",
        "v1,ü=ünicode",
        "v1,\udcff",
        "v1," + "A" * 10_000,
    ],
)
def test_malformed_signature_entries(signature):
    error = refused(BODY, {**fresh(), "webhook-signature": signature}, keys=KEY)
    assert error.reason in {"malformed-header", "no-match"}


def test_duplicate_signature_entries():
    wrong = "v1," + "A" * 43 + "="
    assert refused(BODY, {**fresh(), "webhook-signature": f"{wrong} {wrong}"}, keys=KEY)
    right = fresh()["webhook-signature"]
    assert verify(BODY, {**fresh(), "webhook-signature": f"{right} {right} {wrong}"}, keys=KEY)
    error = refused(BODY, {**fresh(), "webhook-signature": " ".join([wrong] * 65)}, keys=KEY)
    assert error.reason == "malformed-header" and "too many" in str(error)


def test_a_header_twice_with_different_values():
    headers = list(fresh().items())
    headers.append(("Webhook-Timestamp", "1719823259"))
    error = refused(BODY, headers, keys=KEY)
    assert error.reason == "malformed-header" and "2 times" in str(error)
    # The same value twice is one header.
    same = [*fresh().items(), ("WEBHOOK-ID", DELIVERY_ID)]
    assert verify(BODY, same, keys=KEY)


def test_a_signed_body_that_is_not_a_json_object():
    for body in (b"[1, 2]", b"not json", b"\xff\xfe", b"[" * 100_000):
        assert refused(body, fresh(body), keys=KEY).reason == "not-an-event"


def test_arguments_of_the_wrong_kind_are_programming_errors():
    with pytest.raises(ValueError, match="at least one"):
        verify(BODY, fresh(), keys=[])
    with pytest.raises(TypeError, match="signingKey"):
        verify(BODY, fresh(), keys=[b"bytes-key"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="raw request body"):
        verify(json.loads(BODY), fresh(), keys=KEY)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=300) | st.text(max_size=300),
    headers=st.dictionaries(
        st.sampled_from(
            [
                "webhook-id",
                "Webhook-Timestamp",
                "webhook-signature",
                "messagebird-signature",
                "messagebird-request-timestamp",
                "x-other",
            ]
        ),
        st.text(max_size=80),
    ),
    url=st.none() | st.text(max_size=40),
)
def test_any_input_verifies_or_raises_invalid_signature(body, headers, url):
    with contextlib.suppress(InvalidSignature):
        verify(body, headers, keys=[KEY, UNICODE_KEY], url=url)


@settings(max_examples=200, deadline=None)
@given(position=st.integers(min_value=0, max_value=len(BODY) - 1), byte=st.integers(0, 255))
def test_any_one_byte_change_is_refused(position, byte):
    altered = bytearray(BODY)
    if altered[position] == byte:
        return
    altered[position] = byte
    headers = fresh()
    with pytest.raises(InvalidSignature):
        verify(bytes(altered), headers, keys=KEY)


# -- header objects -----------------------------------------------------------------------------


def _header_objects() -> dict[str, object]:
    from multidict import CIMultiDict
    from starlette.datastructures import Headers
    from werkzeug.datastructures import EnvironHeaders
    from werkzeug.datastructures import Headers as WerkzeugHeaders

    signed = fresh()
    message = email.message.Message()
    for name, value in signed.items():
        message[name] = value
    environ = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in signed.items()}
    return {
        "dict, title case": {name.title(): value for name, value in signed.items()},
        "dict, upper case": {name.upper(): value for name, value in signed.items()},
        "pairs": list(signed.items()),
        "raw ASGI pairs": [(name.encode(), value.encode()) for name, value in signed.items()],
        "starlette": Headers(raw=[(n.encode(), v.encode()) for n, v in signed.items()]),
        "werkzeug": WerkzeugHeaders(list(signed.items())),
        "flask (environ)": EnvironHeaders(environ),
        "aiohttp": CIMultiDict(signed),
        "http.server": message,
    }


@pytest.mark.parametrize("kind", list(_header_objects()))
def test_header_objects_of_the_usual_frameworks(kind):
    headers = _header_objects()[kind]
    assert verify(BODY, headers, keys=KEY, url=BIRD_URL)["event"] == "voice.inbound"  # type: ignore[arg-type]


def test_django_headers():
    from django.http.request import HttpHeaders

    signed = fresh()
    meta = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in signed.items()}
    assert verify(BODY, HttpHeaders(meta), keys=KEY, url=BIRD_URL)


# -- no server dependency -----------------------------------------------------------------------

SERVER_DEPENDENCIES = ("fastapi", "starlette", "sqlalchemy", "asyncpg", "pydantic", "aiohttp")


def test_importing_the_receiver_pulls_in_no_server_dependency():
    code = (
        "import sys, voicehooks.receiver\n"
        f"print(sorted(m for m in {SERVER_DEPENDENCIES!r} if m in sys.modules))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert found.strip() == "[]"


def test_the_receiver_works_with_the_standard_library_alone(tmp_path):
    """Isolated (-I), without site-packages (-S): only the source tree and the stdlib."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import json, time\n"
        "from voicehooks.dispatch.signing import bird_signature, signature_headers\n"
        "from voicehooks.receiver import verify\n"
        'body = b\'{"event": "voice.inbound"}\'\n'
        "headers = signature_headers(delivery_id='d', timestamp=int(time.time()), "
        "url='https://example.com/hook', body=body, signing_key='k' * 16)\n"
        "print(json.dumps(verify(body, headers, keys='k' * 16, url='https://example.com/hook')))"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(SOURCE)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", "")},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"event": "voice.inbound"}
