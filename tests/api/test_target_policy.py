"""Unit and property tests of the subscription target rules and the event filter rules."""

import ipaddress
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicehooks.net.addresses import is_blocked_address, parse_ip_host, resolve_host
from voicehooks.subscriptions.filters import FilterSet, parse_filters
from voicehooks.subscriptions.target_policy import TargetRefused, check_target_url, split_target
from voicehooks.voice import CALL_STATUSES

PROPERTIES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BLOCKED_V4 = [
    "0.0.0.0/8",  # "this network", unspecified
    "10.0.0.0/8",
    "100.64.0.0/10",  # shared address space (carrier-grade NAT)
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, and the broadcast address
]
BLOCKED_V6 = [
    "::1/128",
    "::/128",
    "::/8",  # reserved, IPv4-compatible
    "100::/64",  # discard-only
    "2001:db8::/32",  # documentation
    "fc00::/7",  # unique local
    "fe80::/10",  # link-local
    "fec0::/10",  # site-local (deprecated)
    "ff00::/8",  # multicast
    "5f00::/16",  # segment routing
]
GLOBAL_V4 = ["1.1.1.0/24", "8.0.0.0/7", "93.184.216.0/24", "104.16.0.0/12", "151.101.0.0/16"]
GLOBAL_V6 = ["2606:4700::/32", "2a00:1450::/32", "2001:4860::/32", "2400:cb00::/32"]


def addresses_in(networks: list[str]) -> st.SearchStrategy:
    def inside(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> st.SearchStrategy:
        first, last = int(network.network_address), int(network.broadcast_address)
        return st.integers(first, last).map(type(network.network_address))

    return st.one_of([inside(ipaddress.ip_network(network)) for network in networks])


blocked_v4 = addresses_in(BLOCKED_V4)
blocked_v6 = addresses_in(BLOCKED_V6)
global_v4 = addresses_in(GLOBAL_V4)
global_v6 = addresses_in(GLOBAL_V6)


def mapped(address: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(0xFFFF00000000 | int(address))


def url_host(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return f"[{address}]" if address.version == 6 else str(address)


async def check(url: str, *, allowed: str = "", allow_http: bool = False) -> str:
    networks = [ipaddress.ip_network(item) for item in allowed.split(",") if item]
    return await check_target_url(url, allow_http=allow_http, allowed_networks=networks)


# --- addresses ----------------------------------------------------------------------------


@PROPERTIES
@given(address=st.one_of(blocked_v4, blocked_v6))
def test_every_internal_address_is_blocked(address):
    assert is_blocked_address(address, [])


@PROPERTIES
@given(address=blocked_v4)
def test_internal_ipv4_is_blocked_inside_ipv6_too(address):
    assert is_blocked_address(mapped(address), [])
    nat64 = ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(address))
    assert is_blocked_address(nat64, [])
    six_to_four = ipaddress.IPv6Address((0x2002 << 112) | (int(address) << 80) | 1)
    assert is_blocked_address(six_to_four, [])


@PROPERTIES
@given(address=st.one_of(global_v4, global_v6))
def test_global_addresses_pass(address):
    assert address.is_global
    assert not is_blocked_address(address, [])


@PROPERTIES
@given(address=st.one_of(blocked_v4, blocked_v6), data=st.data())
def test_an_allowed_network_exempts_its_addresses(address, data):
    prefix = data.draw(st.integers(8 if address.version == 4 else 16, address.max_prefixlen))
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    assert not is_blocked_address(address, [network])
    if address.version == 4:
        assert not is_blocked_address(mapped(address), [network])


@PROPERTIES
@given(address=blocked_v4, other=blocked_v4)
def test_an_allowed_network_exempts_only_its_own_addresses(address, other):
    network = ipaddress.ip_network(f"{address}/32")
    assert is_blocked_address(other, [network]) == (other != address)


@PROPERTIES
@given(address=st.one_of(blocked_v4, global_v4))
def test_every_spelling_of_an_ipv4_host_is_the_same_address(address):
    value = int(address)
    octets = [int(part) for part in str(address).split(".")]
    spellings = [
        str(address),
        str(value),
        hex(value),
        ".".join(f"0{octet:o}" for octet in octets),
        ".".join(hex(octet) for octet in octets),
        f"{octets[0]}.{value & 0xFFFFFF}",
        f"{octets[0]}.{octets[1]}.{value & 0xFFFF}",
        f"{address}.",
        str(mapped(address)),
    ]
    for spelling in spellings:
        parsed = parse_ip_host(spelling)
        assert parsed is not None, spelling
        assert int(parsed) & 0xFFFFFFFF == value, spelling


@PROPERTIES
@given(address=blocked_v4, form=st.sampled_from(["int", "hex", "octal", "mapped", "dotted"]))
async def test_internal_ipv4_urls_are_refused_in_any_encoding(address, form):
    host = {
        "int": str(int(address)),
        "hex": hex(int(address)),
        "octal": ".".join(f"0{int(octet):o}" for octet in str(address).split(".")),
        "mapped": f"[{mapped(address)}]",
        "dotted": str(address),
    }[form]
    with pytest.raises(TargetRefused, match="blocked address"):
        await check(f"https://{host}/hook")
    with pytest.raises(TargetRefused, match="blocked address"):
        await check(f"http://{host}:8080/hook", allow_http=True)


@PROPERTIES
@given(address=st.one_of(blocked_v6))
async def test_internal_ipv6_urls_are_refused(address):
    with pytest.raises(TargetRefused, match="blocked address"):
        await check(f"https://[{address}]/hook")


@PROPERTIES
@given(address=st.one_of(global_v4, global_v6), port=st.integers(1, 65535))
async def test_global_address_urls_are_accepted(address, port):
    host = await check(f"https://{url_host(address)}:{port}/hook?x=1")
    assert host == str(address)


@PROPERTIES
@given(address=blocked_v4)
async def test_allowed_networks_exempt_urls(address):
    network = f"{address}/32"
    assert await check(f"https://{address}/hook", allowed=network) == str(address)
    # Exempt or not, a spelling the sender cannot connect to is refused, with the fix.
    with pytest.raises(TargetRefused, match=f"write it as {address}"):
        await check(f"https://{int(address)}/hook", allowed=network)
    elsewhere = "198.51.100.7/32" if str(address) != "198.51.100.7" else "198.51.100.8/32"
    with pytest.raises(TargetRefused):
        await check(f"https://{address}/hook", allowed=elsewhere)


# --- URL syntax ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://example.com/", "https"),
        ("ftp://example.com/", "https"),
        ("example.com/hook", "https"),
        ("https://user:pw@example.com/", "user information"),
        ("https://user@example.com/", "user information"),
        ("https://@example.com/", "user information"),
        ("https:///path", "host"),
        ("https://example.com:0/", "port 0"),
        ("https://example.com:65536/", "valid URL"),
        ("https://[::1/", "valid URL"),
        ("https://exa mple.com/", "spaces"),
        ("https://example.com/\x00", "control"),
        ("https://example.com/" + "a" * 2048, "2048"),
    ],
)
def test_split_target_refuses(url, reason):
    with pytest.raises(TargetRefused, match=reason):
        split_target(url, allow_http=False)


@pytest.mark.parametrize(
    ("host", "fix"),
    [
        ("127.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.000.000.001", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("1.2.3.4.5", "a.b.c.d"),
        ("256.1.1.1", "a.b.c.d"),
    ],
)
async def test_numeric_hosts_other_than_dotted_quads_are_refused_with_the_fix(host, fix):
    with pytest.raises(TargetRefused, match=f"dotted-quad.*{fix}"):
        await check(f"http://{host}:8080/hook", allow_http=True, allowed="127.0.0.0/8")


def test_split_target_admits_http_only_when_allowed():
    assert split_target("http://example.com/x", allow_http=True).hostname == "example.com"
    with pytest.raises(TargetRefused):
        split_target("http://example.com/x", allow_http=False)
    with pytest.raises(TargetRefused):
        split_target("ftp://example.com/x", allow_http=True)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("::1", "::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("example.com", None),
        ("deadbeef", None),
        ("cafe.face", None),
        ("1.2.3.4.5", None),
        ("256.0.0.1", None),
        ("", None),
    ],
)
def test_parse_ip_host(host, expected):
    parsed = parse_ip_host(host)
    assert (str(parsed) if parsed is not None else None) == expected


async def test_names_are_resolved_and_judged_by_their_addresses():
    # `localhost` comes from the hosts file: no network needed.
    assert ipaddress.ip_address("127.0.0.1") in await resolve_host("localhost")
    with pytest.raises(TargetRefused, match="blocked address"):
        await check("https://localhost/hook")
    assert await check("http://localhost:8080/hook", allowed="127.0.0.0/8,::1/128", allow_http=True)


async def test_an_unresolvable_host_is_accepted_for_now():
    assert await resolve_host("does-not-exist.invalid") == []
    assert await check("https://Does-Not-Exist.invalid/hook") == "does-not-exist.invalid"


# --- filters ------------------------------------------------------------------------------

events = st.sampled_from(sorted(CALL_STATUSES))
keys_other_than_ours = st.text(min_size=0, max_size=12).filter(
    lambda key: key not in ("channelId", "status")
)


def not_a_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return True
    return False


@st.composite
def valid_filters(draw, event: str | None = None):
    event = event or draw(events)
    statuses = draw(st.lists(st.sampled_from(CALL_STATUSES[event]), unique=True))
    filters = [("status", status) for status in statuses]
    channel = draw(st.none() | st.uuids())
    if channel is not None:
        spelled = draw(st.sampled_from([str(channel), str(channel).upper()]))
        filters.insert(draw(st.integers(0, len(filters))), ("channelId", spelled))
    return event, filters, channel, tuple(sorted(statuses))


@PROPERTIES
@given(case=valid_filters(), data=st.data())
def test_valid_filter_sets_are_accepted_in_any_order(case, data):
    event, filters, channel, statuses = case
    parsed, errors = parse_filters(event, filters)
    assert errors == []
    assert parsed == FilterSet(channel, statuses)
    shuffled = data.draw(st.permutations(filters))
    assert parse_filters(event, shuffled) == (parsed, [])


@PROPERTIES
@given(case=valid_filters(), key=keys_other_than_ours, value=st.text(max_size=20), data=st.data())
def test_an_unknown_key_is_refused_at_its_index(case, key, value, data):
    event, filters, _, _ = case
    index = data.draw(st.integers(0, len(filters)))
    filters = [*filters[:index], (key, value), *filters[index:]]
    parsed, errors = parse_filters(event, filters)
    assert parsed is None
    assert [error.field for error in errors] == [f"eventFilters[{index}].key"]


@PROPERTIES
@given(case=valid_filters(), data=st.data())
def test_a_status_of_another_vocabulary_is_refused_at_its_value(case, data):
    event, filters, _, _ = case
    status = data.draw(
        st.one_of(
            st.text(max_size=20),
            st.sampled_from(["accepted", "cancelled", "COMPLETED", " ringing"]),
        ).filter(lambda value: value not in CALL_STATUSES[event])
    )
    index = data.draw(st.integers(0, len(filters)))
    filters = [*filters[:index], ("status", status), *filters[index:]]
    parsed, errors = parse_filters(event, filters)
    assert parsed is None
    assert [error.field for error in errors] == [f"eventFilters[{index}].value"]


def test_accepted_is_a_status_of_outbound_calls_only():
    refused, errors = parse_filters("voice.inbound", [("status", "accepted")])
    assert refused is None and errors[0].field == "eventFilters[0].value"
    accepted, errors = parse_filters("voice.outbound", [("status", "accepted")])
    assert errors == [] and accepted == FilterSet(None, ("accepted",))


@PROPERTIES
@given(case=valid_filters(), data=st.data())
def test_a_duplicate_filter_is_refused_at_the_repeat(case, data):
    event, filters, _, _ = case
    if not filters:
        filters = [("status", CALL_STATUSES[event][0])]
    original = data.draw(st.integers(0, len(filters) - 1))
    index = data.draw(st.integers(original + 1, len(filters)))
    filters = [*filters[:index], filters[original], *filters[index:]]
    parsed, errors = parse_filters(event, filters)
    assert parsed is None
    assert len(errors) == 1
    assert errors[0].field.startswith(f"eventFilters[{index}]")


@PROPERTIES
@given(case=valid_filters(), second=st.uuids(), data=st.data())
def test_a_second_channel_is_refused(case, second, data):
    event, filters, channel, _ = case
    if channel is None:
        filters = [("channelId", str(uuid.uuid4())), *filters]
    index = data.draw(st.integers(0, len(filters)))
    filters = [*filters[:index], ("channelId", str(second)), *filters[index:]]
    parsed, errors = parse_filters(event, filters)
    assert parsed is None
    assert len(errors) == 1
    later = max(position for position, (key, _) in enumerate(filters) if key == "channelId")
    assert errors[0].field == f"eventFilters[{later}].key"


@PROPERTIES
@given(event=events, value=st.text(max_size=40).filter(not_a_uuid))
def test_a_channel_that_is_not_a_uuid_is_refused(event, value):
    parsed, errors = parse_filters(
        event, [("status", CALL_STATUSES[event][1]), ("channelId", value)]
    )
    assert parsed is None
    assert [error.field for error in errors] == ["eventFilters[1].value"]


@PROPERTIES
@given(
    event=events,
    filters=st.lists(
        st.tuples(st.sampled_from(["channelId", "status", "other"]), st.text(max_size=8))
    ),
)
def test_errors_and_results_are_exclusive(event, filters):
    parsed, errors = parse_filters(event, filters, field="f")
    assert (parsed is None) == bool(errors)
    for error in errors:
        index = int(error.field.removeprefix("f[").split("]")[0])
        assert 0 <= index < len(filters)
        assert error.message
