"""The wire format of `mirror serve`, fuzzed: whatever bytes a peer sends, the parsers raise
ProtocolError or give back values that are safe to use (no name or path leads anywhere but
below the root), and what the pack functions write parses back to the same values."""
from __future__ import annotations

import stat
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from mirror.remote import wire
from mirror.remote.wire import Frame, ProtocolError, Read

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND = settings(max_examples=100, deadline=None)


class Listed(NamedTuple):
    """What pack_stat and pack_entries read of an Entry."""

    mode: int
    size: int
    mtime_ns: int
    ctime_ns: int
    atime_ns: int
    uid: int
    gid: int
    ino: int
    dev: int
    nlink: int
    rdev: int
    target: bytes | None = None


# -- what "safe" means, written out independently of wire.py --------------------------------

def safe_name(name: bytes) -> bool:
    return (0 < len(name) <= 255 and name not in (b".", b"..")
            and b"/" not in name and b"\0" not in name)


def safe_path(path: bytes) -> bool:
    """b"" (the root) or names joined by "/": never absolute, no empty, "." or ".." part."""
    if path == b"":
        return True
    return len(path) <= 4096 and not path.startswith(b"/") and all(
        safe_name(part) for part in path.split(b"/"))


FILE_TYPES = {stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFIFO, stat.S_IFCHR,
              stat.S_IFBLK, stat.S_IFSOCK}


def safe_stat(st: wire.RemoteStat) -> bool:
    return (0 <= st.st_mode < 1 << 16 and stat.S_IFMT(st.st_mode) in FILE_TYPES
            and 0 <= st.st_size < 1 << 63)


def safe_target(st: wire.RemoteStat) -> bool:
    if stat.S_ISLNK(st.st_mode):
        return st.target is not None and 0 < len(st.target) <= 4095 and b"\0" not in st.target
    return st.target is None


# -- strategies -----------------------------------------------------------------------------

# Names built from the bytes that matter: most are fine, many are exactly what must be refused.
HOSTILE_PARTS = st.sampled_from([b"a", b"b", b".", b"..", b"/", b"\0", b"\xff", b"...", b" "])
HOSTILE_NAMES = st.one_of(
    st.lists(HOSTILE_PARTS, max_size=6).map(b"".join),
    st.sampled_from([b"", b".", b"..", b"a/b", b"/etc", b"x\0y", b"n" * 255, b"n" * 256, b"n" * 300]),
    st.binary(max_size=12),
)
GOOD_NAMES = st.binary(min_size=1, max_size=40).filter(safe_name)
HOSTILE_PATHS = st.one_of(
    st.lists(HOSTILE_NAMES, min_size=1, max_size=4).map(b"/".join),
    st.sampled_from([b"..", b"../x", b"/etc", b"a/../../x", b"a//b", b"a/", b"/", b"a/./b",
                     b"a/\0/b", b"/".join([b"n" * 255] * 17)]),
)
GOOD_PATHS = st.one_of(st.just(b""), st.lists(GOOD_NAMES, min_size=1, max_size=5).map(b"/".join))
U16, U32, U64 = st.integers(0, 2**16 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)
I64 = st.integers(-2**63, 2**63 - 1)
TYPES = st.sampled_from(sorted(FILE_TYPES))
MODES = st.one_of(st.builds(lambda kind, perms: kind | perms, TYPES, st.integers(0, 0o7777)), U32)
TARGETS = st.one_of(st.binary(min_size=1, max_size=64).filter(lambda t: b"\0" not in t),
                    st.sampled_from([b"", b"a\0b", b"\0", b"t" * 4095, b"t" * 4096]), st.binary(max_size=16))


@st.composite
def entries(draw, modes=MODES, names=HOSTILE_NAMES, targets=TARGETS):
    """(name, Listed) pairs, possibly unsafe, as a hostile server could send them."""
    items = []
    for _ in range(draw(st.integers(0, 5))):
        mode = draw(modes)
        target = draw(targets) if stat.S_ISLNK(mode) or draw(st.booleans()) else None
        listed = Listed(mode, draw(st.one_of(st.integers(0, 1 << 40), U64)), draw(I64), draw(I64),
                        draw(I64), draw(U32), draw(U32), draw(U64), draw(U64), draw(U32), draw(U64),
                        target)
        items.append((draw(names), listed))
    return items


@st.composite
def mutated(draw, message: bytes):
    """`message` with a few bytes flipped, inserted, cut out, or the whole cut short."""
    data = bytearray(message)
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "splice"]))
        at = draw(st.integers(0, len(data)))
        if how == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif how == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        elif how == "truncate":
            del data[at:]
        else:
            data[at:at + draw(st.integers(0, 3))] = draw(st.sampled_from([b"..", b"/", b"\0", b"\xff" * 4]))
    return bytes(data)


def payload_of(frame: bytes) -> bytes:
    kind, length = wire.parse_header(frame[:wire.HEADER.size], wire.MAX_REPLY)
    assert length == len(frame) - wire.HEADER.size
    return frame[wire.HEADER.size:]


def valid_request(kind: Frame, path: bytes, offset: int, length: int, expect) -> bytes:
    if kind is Frame.READ:
        return payload_of(wire.pack_read(Read(path, offset, length, expect)))
    return payload_of(wire.pack_path_request(kind, path))


# -- the checks every accepted value passes -------------------------------------------------

def check_request(kind: Frame, payload: bytes):
    """parse_request accepts only safe requests, and otherwise raises ProtocolError only."""
    try:
        request = wire.parse_request(kind, payload)
    except ProtocolError:
        return None
    assert kind in (Frame.ROOT, Frame.LIST, Frame.READ, Frame.DIGEST)
    if kind is Frame.READ:
        assert isinstance(request, Read)
        assert safe_path(request.path), request
        assert 0 <= request.offset < 1 << 63 and 0 <= request.length < 1 << 64
        assert request.expect is None or 0 <= request.expect[0] < 1 << 63
    else:
        assert isinstance(request, bytes) and safe_path(request), request
    return request


def check_entries(payload: bytes):
    listing: dict[bytes, wire.RemoteStat] = {}
    try:
        wire.parse_entries(payload, listing)
    except ProtocolError:
        return None
    for name, st in listing.items():
        assert safe_name(name), name
        assert safe_stat(st) and safe_target(st), (name, st)
    return listing


def check_one_stat(payload: bytes):
    try:
        st = wire.parse_one_stat(payload)
    except ProtocolError:
        return None
    assert safe_stat(st) and st.target is None
    return st


def check_others(payload: bytes) -> None:
    """The fixed-size messages: ProtocolError, or values of the right types and sizes."""
    try:
        version, session, nonce = wire.parse_hello(payload)
        assert 0 <= version < 1 << 16 and len(session) == wire.SESSION and len(nonce) == wire.NONCE
    except ProtocolError:
        pass
    try:
        unchanged, sent = wire.parse_eof(payload)
        assert isinstance(unchanged, bool) and 0 <= sent < 1 << 64
    except ProtocolError:
        pass
    try:
        code, message = wire.parse_error(payload)
        assert 0 <= code < 1 << 32 and isinstance(message, str)
        assert len(message.encode("utf-8", "surrogateescape")) <= 3 * 1024  # replacement chars
    except ProtocolError:
        pass


# -- fuzz: random bytes ---------------------------------------------------------------------

@FUZZ
@given(header=st.binary(min_size=5, max_size=5), limit=st.sampled_from([0, wire.MAX_REQUEST, wire.MAX_REPLY]))
def test_any_header_is_a_known_frame_within_the_limit_or_a_protocol_error(header, limit):
    try:
        kind, length = wire.parse_header(header, limit)
    except ProtocolError:
        return
    assert isinstance(kind, Frame) and 0 <= length <= limit


@FUZZ
@given(header=st.binary(max_size=4))
def test_a_header_cut_short_is_a_protocol_error(header):
    with pytest.raises(ProtocolError):
        wire.parse_header(header, wire.MAX_REPLY)


@FUZZ
@given(kind=st.sampled_from(list(Frame)), payload=st.binary(max_size=300))
@example(kind=Frame.LIST, payload=b"\x00\x02..")
@example(kind=Frame.ROOT, payload=b"\x00\x04/etc")
@example(kind=Frame.DIGEST, payload=b"\x00\x03a\x00b")
def test_random_requests_raise_protocol_error_or_are_safe(kind, payload):
    check_request(kind, payload)


@FUZZ
@given(payload=st.binary(max_size=600))
def test_random_replies_raise_protocol_error_or_are_safe(payload):
    check_entries(payload)
    check_one_stat(payload)
    check_others(payload)


@FUZZ
@given(payload=st.binary(min_size=wire.HELLO.size, max_size=wire.HELLO.size))
def test_a_hello_is_accepted_only_with_the_magic(payload):
    try:
        wire.parse_hello(payload)
    except ProtocolError:
        assert not payload.startswith(wire.MAGIC)
    else:
        assert payload.startswith(wire.MAGIC)


# -- fuzz: valid messages mutated, and messages a hostile peer packs on purpose ----------------

@FUZZ
@given(data=st.data(), kind=st.sampled_from([Frame.ROOT, Frame.LIST, Frame.READ, Frame.DIGEST]),
       path=st.one_of(GOOD_PATHS, HOSTILE_PATHS), offset=U64, length=U64,
       expect=st.one_of(st.none(), st.tuples(U64, I64, I64)))
def test_mutated_requests_raise_protocol_error_or_are_safe(data, kind, path, offset, length, expect):
    assume(len(path) < 1 << 16)
    message = valid_request(kind, path, offset, length, expect)
    check_request(kind, message)
    check_request(kind, data.draw(mutated(message)))


@FUZZ
@given(kind=st.sampled_from([Frame.ROOT, Frame.LIST, Frame.READ, Frame.DIGEST]),
       path=st.one_of(GOOD_PATHS, HOSTILE_PATHS))
def test_a_requested_path_is_accepted_exactly_when_it_stays_below_the_root(kind, path):
    assume(len(path) < 1 << 16)
    accepted = check_request(kind, valid_request(kind, path, 0, wire.NO_LIMIT, None))
    assert (accepted is not None) == safe_path(path), path


@FUZZ
@given(offset=U64, length=U64, expect=st.one_of(st.none(), st.tuples(U64, I64, I64)))
def test_a_read_is_accepted_exactly_when_offset_and_size_fit_in_a_signed_64_bit_integer(offset, length,
                                                                                       expect):
    accepted = check_request(Frame.READ, valid_request(Frame.READ, b"a/b", offset, length, expect))
    assert (accepted is not None) == (offset < 1 << 63 and (expect is None or expect[0] < 1 << 63))


@FUZZ
@given(target=TARGETS, kind=TYPES)
def test_a_link_target_is_accepted_exactly_when_it_is_safe(target, kind):
    listed = Listed(kind | 0o777, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, target)
    accepted = check_entries(payload_of(wire.pack_entries([(b"link", listed)])))
    if kind == stat.S_IFLNK:
        assert (accepted is not None) == (0 < len(target) <= 4095 and b"\0" not in target), target
    else:
        assert (accepted is not None) == (target == b""), target  # a target on a non-link: refused


@FUZZ
@given(items=entries(names=st.one_of(GOOD_NAMES, HOSTILE_NAMES)))
def test_a_listing_is_accepted_exactly_when_every_entry_is_safe(items):
    names = [name for name, _ in items]
    assume(all(len(name) < 1 << 16 and len(listed.target or b"") < 1 << 16 for name, listed in items))
    payload = payload_of(wire.pack_entries(items))

    listing = check_entries(payload)

    def fine(listed: Listed) -> bool:
        st = wire.RemoteStat(listed.mode, listed.size, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                             listed.target if stat.S_ISLNK(listed.mode) else None)
        extra = not stat.S_ISLNK(listed.mode) and listed.target  # a target on a non-link
        return safe_stat(st) and safe_target(st) and not extra
    expected = all(safe_name(name) and fine(listed) for name, listed in items) and (
        len(set(names)) == len(names))
    assert (listing is not None) == expected, items


@FUZZ
@given(data=st.data(), items=entries(modes=st.builds(lambda kind: kind | 0o644, TYPES), names=GOOD_NAMES,
                                    targets=st.binary(min_size=1, max_size=40).filter(lambda t: b"\0" not in t)))
def test_mutated_listings_raise_protocol_error_or_are_safe(data, items):
    payload = payload_of(wire.pack_entries(items))
    check_entries(payload)
    check_entries(data.draw(mutated(payload)))


@FUZZ
@given(data=st.data(), listed=entries(names=st.just(b"x")).filter(bool).map(lambda items: items[0][1]))
def test_mutated_stats_raise_protocol_error_or_are_safe(data, listed):
    payload = wire.pack_stat(listed)
    check_one_stat(payload)
    check_one_stat(data.draw(mutated(payload)))


@FUZZ
@given(data=st.data(), unchanged=st.booleans(), sent=U64, code=U32, message=st.text(max_size=300),
       session=st.binary(min_size=16, max_size=16), nonce=st.binary(min_size=32, max_size=32))
def test_mutated_small_messages_raise_protocol_error_or_are_sane(data, unchanged, sent, code, message,
                                                                 session, nonce):
    for frame in (wire.pack_eof(unchanged, sent), wire.pack_error(code, message), wire.pack_hello(session, nonce)):
        check_others(data.draw(mutated(payload_of(frame))))


# -- round trips ----------------------------------------------------------------------------

@ROUND
@given(kind=st.sampled_from([Frame.ROOT, Frame.LIST, Frame.DIGEST]), path=GOOD_PATHS)
def test_path_requests_round_trip(kind, path):
    frame = wire.pack_path_request(kind, path)
    parsed_kind, length = wire.parse_header(frame[:5], wire.MAX_REQUEST)
    assert (parsed_kind, length) == (kind, len(frame) - 5)
    assert wire.parse_request(kind, frame[5:]) == path


@ROUND
@given(path=GOOD_PATHS, offset=st.integers(0, 2**63 - 1), length=U64,
       expect=st.one_of(st.none(), st.tuples(st.integers(0, 2**63 - 1), I64, I64)))
def test_reads_round_trip(path, offset, length, expect):
    request = Read(path, offset, length, expect)
    frame = wire.pack_read(request)
    assert wire.parse_header(frame[:5], wire.MAX_REQUEST) == (Frame.READ, len(frame) - 5)
    assert wire.parse_request(Frame.READ, frame[5:]) == request


@ROUND
@given(session=st.binary(min_size=16, max_size=16), nonce=st.binary(min_size=32, max_size=32))
def test_hello_round_trips(session, nonce):
    assert wire.parse_hello(payload_of(wire.pack_hello(session, nonce))) == (wire.VERSION, session, nonce)


@ROUND
@given(items=entries(modes=st.builds(lambda kind, perms: kind | perms, TYPES, st.integers(0, 0o7777)),
                     names=GOOD_NAMES, targets=st.binary(min_size=1, max_size=64).filter(lambda t: b"\0" not in t)))
def test_listings_round_trip(items):
    items = [(name, listed._replace(size=listed.size % (1 << 63),
                                    target=listed.target if stat.S_ISLNK(listed.mode) else None))
             for name, listed in dict(items).items()]
    listing: dict[bytes, wire.RemoteStat] = {}

    wire.parse_entries(payload_of(wire.pack_entries(items)), listing)

    assert listing == {name: wire.RemoteStat(listed.mode, listed.size, listed.mtime_ns, listed.ctime_ns,
                                             listed.atime_ns, listed.uid, listed.gid, listed.ino,
                                             listed.dev, listed.nlink, listed.rdev, listed.target)
                       for name, listed in items}


def test_a_listing_in_two_frames_cannot_name_an_entry_twice():
    listed = Listed(stat.S_IFREG | 0o644, 1, 0, 0, 0, 0, 0, 1, 1, 1, 0)
    listing: dict[bytes, wire.RemoteStat] = {}
    wire.parse_entries(payload_of(wire.pack_entries([(b"f", listed)])), listing)

    with pytest.raises(ProtocolError, match="twice"):
        wire.parse_entries(payload_of(wire.pack_entries([(b"f", listed._replace(size=2))])), listing)
    assert listing[b"f"].st_size == 1


@ROUND
@given(unchanged=st.booleans(), sent=U64, code=U32, message=st.text(max_size=200))
def test_eof_and_error_round_trip(unchanged, sent, code, message):
    assert wire.parse_eof(payload_of(wire.pack_eof(unchanged, sent))) == (unchanged, sent)
    assert wire.parse_error(payload_of(wire.pack_error(code, message))) == (code, message)


def test_an_error_message_is_cut_to_1024_bytes_and_still_parses():
    code, message = wire.parse_error(payload_of(wire.pack_error(5, "é" * 2000)))
    assert code == 5 and len(message.encode()) <= 1024 + 2 and message.startswith("é" * 511)


def test_requests_of_other_frame_types_are_refused():
    for kind in Frame:
        if kind in (Frame.ROOT, Frame.LIST, Frame.READ, Frame.DIGEST):
            continue
        with pytest.raises(ProtocolError):
            wire.parse_request(kind, wire.pack_bytes(b"a"))


def test_headers_over_the_limit_or_of_unknown_type_are_refused():
    assert wire.parse_header(wire.HEADER.pack(wire.MAX_REQUEST, Frame.LIST), wire.MAX_REQUEST) == (
        Frame.LIST, wire.MAX_REQUEST)
    with pytest.raises(ProtocolError, match="bytes"):
        wire.parse_header(wire.HEADER.pack(wire.MAX_REQUEST + 1, Frame.LIST), wire.MAX_REQUEST)
    with pytest.raises(ProtocolError, match="unknown frame type 0x7f"):
        wire.parse_header(wire.HEADER.pack(0, 0x7F), wire.MAX_REQUEST)


# -- the proofs -----------------------------------------------------------------------------

@ROUND
@given(token=st.binary(min_size=1, max_size=64), other=st.binary(min_size=1, max_size=64),
       first=st.binary(min_size=32, max_size=32), second=st.binary(min_size=32, max_size=32))
def test_only_the_right_token_in_the_right_role_verifies(token, other, first, second):
    assume(other != token and first != second)
    given_proof = wire.proof(token, b"client", first, second)

    assert wire.check_proof(token, b"client", first, second, given_proof)
    assert not wire.check_proof(other, b"client", first, second, given_proof)       # wrong token
    assert not wire.check_proof(token, b"server", first, second, given_proof)       # replayed as the other side's
    assert not wire.check_proof(token, b"server", second, first, given_proof)
    assert not wire.check_proof(token, b"client", second, first, given_proof)       # nonces swapped
    assert not wire.check_proof(token, b"client", first, second, given_proof[:-1])  # cut short



def test_the_client_takes_no_empty_oversized_or_surplus_data_frame_and_no_short_unchanged_file():
    wire.check_data(1, 0, 10)
    wire.check_data(wire.DATA_FRAME, 0, wire.DATA_FRAME)
    for length, received, limit in ((0, 0, 10), (wire.DATA_FRAME + 1, 0, 1 << 30), (5, 6, 10)):
        with pytest.raises(ProtocolError):
            wire.check_data(length, received, limit)  # empty: a server could send them for ever
    wire.check_end(True, 10, 10, 10)
    wire.check_end(False, 4, 4, 10)  # changed (it shrank): the copy is redone, not kept
    for same, sent, received, expected in ((True, 4, 4, 10), (False, 5, 4, 10)):
        with pytest.raises(ProtocolError):
            wire.check_end(same, sent, received, expected)
