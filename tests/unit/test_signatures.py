"""Both signature schemes against fixed vectors (SPEC §4), on the pure signing module."""

import base64
import hashlib
import hmac

from voicehooks.dispatch.signing import bird_signature, signature_headers, standard_message


def test_birds_documented_vector():
    # Bird's documentation: key, timestamp, URL and body, and the signature they give.
    signature = bird_signature(
        "KeV+/HGoIQrxuE5YPCRR6AuQOJveldYNNhbVi1i22qk=",
        1719823259,
        "https://example.com/webhook",
        b'{"service":"channels","event":"voice.outbound"}',
    )
    assert signature == "2rAwcZQnt5d1tgJLtoTRhVUHzqDxSItH1Gg/3xG6wyc="


def test_standard_webhooks_signed_content_matches_the_specifications_vector():
    # The Standard Webhooks specification's example; its secret is base64 after `whsec_`.
    secret = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    signed = standard_message("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    mac = base64.b64encode(hmac.digest(secret, signed, hashlib.sha256)).decode()
    assert mac == "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_headers_of_an_attempt_with_a_replaced_key_in_its_overlap():
    headers = signature_headers(
        delivery_id="d1",
        timestamp=1700000000,
        url="https://x/y",
        body=b"{}",
        signing_key="k1",
        previous_keys=("k0",),
    )
    assert headers == {
        "messagebird-signature": "Ck4fk1l28hWHwt6XUx5wo3di/gQlOBnRRH1F/rh5VWw=",
        "messagebird-request-timestamp": "1700000000",
        "messagebird-request-id": "d1",
        "webhook-id": "d1",
        "webhook-timestamp": "1700000000",
        # One entry per key: the current one first. Keys sign as their UTF-8 bytes.
        "webhook-signature": "v1,OyvYlFxVNrLJ/+StOWoFK4OxqrOl+GkDJ+XHeAWZRSI= "
        "v1,rRaYr4VnOtbNz+xmxCXZKaqpZljm7UDIn0X07IJCqZk=",
    }
    current = hmac.digest(b"k1", b"d1.1700000000.{}", hashlib.sha256)
    assert headers["webhook-signature"].split()[0] == "v1," + base64.b64encode(current).decode()
