"""The compiled protobuf decoder (``_otlp_fast``) agrees with the pure-Python one.

``decode_protobuf`` tries the compiled decoder first and falls back to
``_decode_protobuf_python`` when it declines (returns None). For every body, valid or
not, ``decode_protobuf`` must give what the Python path gives: equal spans (field by
field, types, dict order, NaN bits, the resource dict shared per ResourceSpans) or
the same OtlpDecodeError message. And whenever the compiled decoder does answer, its
answer must be the Python path's.
"""

from __future__ import annotations

import dataclasses
import math
import struct
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from goldenloop.ingest import otlp
from goldenloop.ingest.otlp import OtlpDecodeError, _decode_protobuf_python, decode_protobuf
from goldenloop.ingest.raw import RawEvent, RawSpan
from goldenloop.sim import SimConfig, encode_otlp, simulate
from goldenloop.sim.otlp import trace_batches

try:
    from goldenloop.ingest import _otlp_fast
except ImportError:  # test_compiled_decoder_is_built_and_used says what to do
    _otlp_fast = None  # type: ignore[assignment]

NOT_BUILT = (
    "goldenloop.ingest._otlp_fast is not built. Reinstall with a C compiler present "
    "(pip install -e '.[test]' builds it via setup.py, which skips it silently when the "
    "build fails: run pip install -v and look for 'building extension ... failed')"
)


def fast(body: bytes) -> list[RawSpan] | None:
    if _otlp_fast is None:
        pytest.fail(NOT_BUILT)
    return _otlp_fast.decode(body, RawSpan, RawEvent)


def test_compiled_decoder_is_built_and_used() -> None:
    if _otlp_fast is None:
        pytest.fail(NOT_BUILT)
    assert otlp.FAST_DECODER, (
        "the extension is built but not used: its RAW_SPAN_FIELDS "
        f"{_otlp_fast.RAW_SPAN_FIELDS} differ from RawSpan's fields"
    )
    assert fast(b"") == []


# -- comparing results ----------------------------------------------------------------------


def canon(value: Any) -> Any:
    """A form in which equal means identical: types kept (True is not 1, 1 is not 1.0),
    floats by their bits (NaN equals the same NaN), dicts in insertion order."""
    if isinstance(value, float):
        return ("float", struct.pack("<d", value))
    if isinstance(value, dict):
        return ("dict", [(canon(k), canon(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [canon(v) for v in value])
    if isinstance(value, RawEvent):
        return ("event", [canon(getattr(value, f.name)) for f in dataclasses.fields(RawEvent)])
    return (type(value).__name__, value)


def resource_sharing(spans: list[RawSpan]) -> list[int]:
    """For each span, the index of the first span holding the same resource dict object."""
    first: dict[int, int] = {}
    return [first.setdefault(id(span.resource), i) for i, span in enumerate(spans)]


def assert_same_spans(got: list[RawSpan], expected: list[RawSpan]) -> None:
    assert type(got) is list
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert type(a) is RawSpan
        for field in dataclasses.fields(RawSpan):
            left, right = getattr(a, field.name), getattr(b, field.name)
            assert canon(left) == canon(right), f"span {i}: {field.name} {left!r} != {right!r}"
    assert resource_sharing(got) == resource_sharing(expected)


def outcome(decode: Callable[[bytes], list[RawSpan]], body: bytes) -> tuple[str, Any]:
    try:
        return "spans", decode(body)
    except OtlpDecodeError as exc:
        return "error", str(exc)


def assert_paths_agree(body: bytes) -> list[RawSpan] | None:
    """decode_protobuf and the Python path give the same; an answer of the compiled
    decoder (returned too) is the Python path's."""
    kind, expected = outcome(_decode_protobuf_python, body)
    got_kind, got = outcome(decode_protobuf, body)
    assert got_kind == kind, (got, expected)
    compiled = fast(body)
    if kind == "error":
        assert got == expected
        assert compiled is None, f"compiled decoder accepted a body protobuf rejects: {expected}"
    else:
        assert_same_spans(got, expected)
        if compiled is not None:
            assert_same_spans(compiled, expected)
    return compiled


# -- random requests built with the protobuf classes ------------------------------------------

HAS_STRINDEX = "string_value_strindex" in AnyValue.DESCRIPTOR.fields_by_name

texts = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=12),
    st.sampled_from(["", "é", "日本語", "😀", "a\U0010ffffb", "\x00", "x" * 200]),
)
keys = st.one_of(st.sampled_from(["", "k", "model", "gen_ai.usage.input_tokens", "😀"]), texts)
int32s = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, 1, 2, 3, -1]))
uint32s = st.integers(0, 2**32 - 1)
uint64s = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 2**63, 2**64 - 1]))
int64s = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([-(2**63), 2**63 - 1, 0, -1]))
doubles = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, -math.nan, math.inf, -math.inf, -0.0, 5e-324]),
)
ids = st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=20))

scalars = st.one_of(
    st.just(("unset", None)),
    texts.map(lambda v: ("str", v)),
    st.booleans().map(lambda v: ("bool", v)),
    int64s.map(lambda v: ("int", v)),
    doubles.map(lambda v: ("double", v)),
    st.binary(max_size=10).map(lambda v: ("bytes", v)),
    *([int32s.map(lambda v: ("strindex", v))] if HAS_STRINDEX else []),
)
any_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(lambda v: ("array", v)),
        st.lists(st.tuples(keys, children), max_size=4).map(lambda v: ("kvlist", v)),
    ),
    max_leaves=8,
)
# Few distinct keys, so duplicates are common.
attribute_lists = st.lists(
    st.tuples(st.sampled_from(["a", "b", "", "é"]) | keys, any_values), max_size=4
)


def set_any(target: AnyValue, tagged: tuple[str, Any]) -> None:
    kind, value = tagged
    if kind == "str":
        target.string_value = value
    elif kind == "bool":
        target.bool_value = value
    elif kind == "int":
        target.int_value = value
    elif kind == "double":
        target.double_value = value
    elif kind == "bytes":
        target.bytes_value = value
    elif kind == "strindex":
        target.string_value_strindex = value
    elif kind == "array":
        target.array_value.SetInParent()
        for item in value:
            set_any(target.array_value.values.add(), item)
    elif kind == "kvlist":
        target.kvlist_value.SetInParent()
        fill(target.kvlist_value.values, value)


def fill(repeated: Any, attributes: list[tuple[str, tuple[str, Any]]]) -> None:
    for key, tagged in attributes:
        kv = repeated.add()
        kv.key = key
        set_any(kv.value, tagged)


@st.composite
def requests(draw: st.DrawFn, max_spans: int = 3) -> ExportTraceServiceRequest:
    """Several resources, scopes and spans, with every optional part sometimes set."""
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        resource_spans = request.resource_spans.add()
        if draw(st.booleans()):
            resource_spans.resource.SetInParent()
            fill(resource_spans.resource.attributes, draw(attribute_lists))
            resource_spans.resource.dropped_attributes_count = draw(uint32s)
        resource_spans.schema_url = draw(texts)
        for _ in range(draw(st.integers(0, 2))):
            scope_spans = resource_spans.scope_spans.add()
            if draw(st.booleans()):
                scope = scope_spans.scope
                scope.SetInParent()
                scope.name = draw(texts)
                scope.version = draw(texts)
                fill(scope.attributes, draw(attribute_lists))
            scope_spans.schema_url = draw(texts)
            for _ in range(draw(st.integers(0, max_spans))):
                fill_span(scope_spans.spans.add(), draw)
    return request


def fill_span(span: Any, draw: st.DrawFn) -> None:
    span.trace_id = draw(ids)
    span.span_id = draw(ids)
    span.parent_span_id = draw(st.one_of(st.just(b""), ids))
    span.trace_state = draw(texts)
    span.name = draw(texts)
    span.kind = draw(int32s)
    span.start_time_unix_nano = draw(uint64s)
    span.end_time_unix_nano = draw(uint64s)
    span.flags = draw(uint32s)
    fill(span.attributes, draw(attribute_lists))
    span.dropped_attributes_count = draw(uint32s)
    for _ in range(draw(st.integers(0, 2))):
        event = span.events.add()
        event.time_unix_nano = draw(uint64s)
        event.name = draw(texts)
        fill(event.attributes, draw(attribute_lists))
    for _ in range(draw(st.integers(0, 1))):
        link = span.links.add()
        link.trace_id = draw(ids)
        link.trace_state = draw(texts)
        fill(link.attributes, draw(attribute_lists))
    if draw(st.booleans()):
        span.status.SetInParent()
        span.status.code = draw(int32s)
        span.status.message = draw(texts)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_random_requests_decode_identically(request: ExportTraceServiceRequest) -> None:
    body = request.SerializeToString()
    compiled = assert_paths_agree(body)
    assert compiled is not None, "the compiled decoder declined an ordinary request"
    # Wire order of fields is free (the scope may follow the spans, the resource its
    # scope spans); protobuf's own order is only one choice.
    reordered = serialize(reversed_fields(parse_wire(body, ROOT)))
    assert assert_paths_agree(reordered) is not None, "declined a reordered request"


# -- mutated bodies ---------------------------------------------------------------------------
# A small wire-format model: a message is a list of Fields; a length-delimited field
# whose number the installed descriptors know as a message holds its parsed Fields.


@dataclasses.dataclass
class Field:
    number: int
    wire_type: int
    #: varint: int; fixed: bytes; length-delimited: bytes or list[Field]; group: list[Field]
    value: Any
    descriptor: FieldDescriptor | None = None


ROOT = ExportTraceServiceRequest.DESCRIPTOR


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if not value:
            return bytes(out + bytes([byte]))
        out.append(byte | 0x80)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def parse_wire(data: bytes, message: Descriptor) -> list[Field]:
    """Parse a valid serialization (what SerializeToString made)."""
    fields, pos = [], 0
    while pos < len(data):
        tag, pos = read_varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        descriptor = message.fields_by_number.get(number)
        value: Any
        if wire_type == 0:
            value, pos = read_varint(data, pos)
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            value, pos = data[pos : pos + size], pos + size
        else:
            assert wire_type == 2
            size, pos = read_varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
            if descriptor is not None and descriptor.message_type is not None:
                value = parse_wire(value, descriptor.message_type)
        fields.append(Field(number, wire_type, value, descriptor))
    return fields


def serialize(fields: list[Field]) -> bytes:
    out = bytearray()
    for field in fields:
        out += varint(field.number << 3 | field.wire_type)
        value = field.value
        if field.wire_type == 0:
            out += varint(value)
        elif field.wire_type == 2:
            payload = serialize(value) if isinstance(value, list) else value
            out += varint(len(payload)) + payload
        elif field.wire_type == 3:
            out += serialize(value) + varint(field.number << 3 | 4)
        else:
            out += value
    return bytes(out)


def clone(field: Field) -> Field:
    value = [clone(f) for f in field.value] if isinstance(field.value, list) else field.value
    return dataclasses.replace(field, value=value)


def messages(fields: list[Field]) -> Iterator[list[Field]]:
    """Every message in the tree (its field list), the root first."""
    yield fields
    for field in fields:
        if isinstance(field.value, list):
            yield from messages(field.value)


def reversed_fields(fields: list[Field]) -> list[Field]:
    """The same message with the fields of every message in reverse wire order, except
    that repeated fields keep their element order (which is meaningful)."""
    out: list[Field] = []
    for number in reversed(list(dict.fromkeys(f.number for f in fields))):
        for field in fields:
            if field.number == number:
                value = (
                    reversed_fields(field.value) if isinstance(field.value, list) else field.value
                )
                out.append(dataclasses.replace(field, value=value))
    return out


INVALID_UTF8 = [
    b"\xff",
    b"\x80",  # a lone continuation byte
    b"\xc0\x80",  # overlong NUL
    b"\xe0\x80\x80",  # overlong, 3 bytes
    b"\xf0\x80\x80\x80",  # overlong, 4 bytes
    b"\xc3",  # truncated
    b"\xe2\x82",  # truncated
    b"\xf4\x8f\xbf",  # truncated
    b"\xc2\x41",  # not a continuation byte
    b"\xe1\x80\x41",
    b"\xed\xa0\x80",  # a surrogate
    b"\xed\xbf\xbf",  # a surrogate
    b"\xf4\x90\x80\x80",  # past U+10FFFF
    b"\xf5\x80\x80\x80",
    b"\xf8\x88\x80\x80\x80",
]


def random_payload(draw: st.DrawFn, wire_type: int) -> Any:
    if wire_type == 0:
        return draw(st.one_of(uint64s, st.integers(0, 300)))
    if wire_type == 1:
        return draw(st.binary(min_size=8, max_size=8))
    if wire_type == 5:
        return draw(st.binary(min_size=4, max_size=4))
    return draw(st.binary(max_size=12))


MUTATIONS = [
    "duplicate",
    "bad_utf8",
    "wire_type",
    "unknown_field",
    "group",
    "varint",
    "delete",
    "truncate",
    "flip",
    "insert_bytes",
]


@st.composite
def mutated_bodies(draw: st.DrawFn) -> bytes:
    tree = parse_wire(draw(requests(max_spans=2)).SerializeToString(), ROOT)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(MUTATIONS))
        if kind in ("truncate", "flip", "insert_bytes"):
            body = bytearray(serialize(tree))
            pos = draw(st.integers(0, len(body)))
            if kind == "truncate":
                del body[pos:]
            elif kind == "flip" and body:
                pos = min(pos, len(body) - 1)
                body[pos] ^= draw(st.integers(1, 255))
            else:
                body[pos:pos] = draw(st.binary(min_size=1, max_size=6))
            return bytes(body)
        containers = list(messages(tree))
        container = draw(st.sampled_from(containers))
        candidates = [
            f
            for f in container
            if kind not in ("bad_utf8", "varint")
            or (
                kind == "bad_utf8"
                and f.descriptor is not None
                and f.descriptor.type == f.descriptor.TYPE_STRING
                and f.wire_type == 2
            )
            or (kind == "varint" and f.wire_type == 0)
        ]
        if kind in ("unknown_field", "group"):
            number = draw(st.one_of(st.integers(1, 20), st.just(2**29 - 1)))
            if kind == "group":
                inner = [Field(1, 0, draw(st.integers(0, 5)))] if draw(st.booleans()) else []
                field = Field(number, 3, inner)
            else:
                wire_type = draw(st.sampled_from([0, 1, 2, 5]))
                field = Field(number, wire_type, random_payload(draw, wire_type))
            container.insert(draw(st.integers(0, len(container))), field)
            continue
        if not candidates:
            continue
        field = draw(st.sampled_from(candidates))
        if kind == "duplicate":
            container.insert(draw(st.integers(0, len(container))), clone(field))
        elif kind == "delete":
            container.remove(field)
        elif kind == "bad_utf8":
            cut = draw(st.integers(0, len(field.value)))
            bad = draw(st.sampled_from(INVALID_UTF8))
            field.value = field.value[:cut] + bad + field.value[cut:]
        elif kind == "varint":
            field.value = draw(uint64s)
        else:  # wire_type
            wire_type = draw(st.sampled_from([t for t in (0, 1, 2, 5) if t != field.wire_type]))
            field.wire_type, field.value = wire_type, random_payload(draw, wire_type)
    return serialize(tree)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_bodies())
def test_mutated_bodies_decode_identically(body: bytes) -> None:
    assert_paths_agree(body)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_decode_identically(body: bytes) -> None:
    assert_paths_agree(body)


# -- hand-made wire data at the edges ---------------------------------------------------------


def ld(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def vi(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value % 2**64)


def in_span(span: bytes) -> bytes:
    return ld(1, ld(2, ld(2, span)))


def attribute(value: bytes, key: bytes = b"k") -> bytes:
    """Span attribute ``key`` with AnyValue wire bytes ``value``."""
    return ld(9, ld(1, key) + ld(2, value))


def nested_arrays(depth: int) -> bytes:
    value = vi(3, 1)
    for _ in range(depth):
        value = ld(5, ld(1, value))
    return in_span(attribute(value))


EDGE_CASES: dict[str, bytes] = {
    "empty body": b"",
    "empty resource spans": ld(1, b""),
    "empty span": in_span(b""),
    **{f"kind {k}": in_span(vi(6, k)) for k in (5, -1, -5, 2**31, 2**32 + 5, 2**63, 2**64 - 1)},
    **{f"status code {k}": in_span(ld(15, vi(3, k))) for k in (2, -1, 2**31, 2**32 + 2)},
    "bool from a big varint": in_span(attribute(vi(2, 2**40))),
    "int64 min": in_span(attribute(vi(3, -(2**63)))),
    "10-byte varint with spare bits": in_span(attribute(b"\x18" + b"\xff" * 9 + b"\x7f")),
    "11-byte varint": in_span(attribute(b"\x18" + b"\xff" * 10 + b"\x01")),
    "overlong int": in_span(attribute(b"\x18\x85" + b"\x80" * 8 + b"\x00")),
    "overlong kind": in_span(b"\x30\x82\x80\x00"),
    "overlong length": in_span(b"\x2a\x82\x00nm"),
    "10-byte length": in_span(b"\x2a\x82" + b"\x80" * 8 + b"\x00nm"),
    "overlong 5-byte tag": in_span(b"\xaa\x80\x80\x80\x00\x02nm"),
    "6-byte tag": in_span(b"\xaa\x80\x80\x80\x80\x00\x02nm"),
    "tag over 32 bits": in_span(b"\xaa\x80\x80\x80\x10\x02nm"),
    "largest field number": in_span(vi(2**29 - 1, 7) + ld(5, b"nm")),
    "field number 0": in_span(vi(0, 7)),
    "length past the end": in_span(b"\x2a\x05ab"),
    "length 2**31": in_span(b"\x2a" + varint(2**31) + b"nm"),
    "truncated fixed64": in_span(b"\x39\x01\x02"),
    "name as varint": in_span(vi(5, 7) + ld(5, b"nm")),
    "name as fixed32": in_span(varint(5 << 3 | 5) + b"abcd"),
    "wrong wire type for flags": in_span(vi(16, 3)),
    "unknown group": in_span(varint(100 << 3 | 3) + vi(1, 1) + varint(100 << 3 | 4) + ld(5, b"n")),
    "unmatched end group": in_span(varint(100 << 3 | 4) + ld(5, b"nm")),
    "invalid wire type 6": in_span(varint(100 << 3 | 6) + b"\x00"),
    "string_value_strindex last": in_span(attribute(ld(1, b"s") + vi(8, 3))),
    "string_value_strindex first": in_span(attribute(vi(8, 3) + ld(1, b"s"))),
    "key_strindex": in_span(ld(9, ld(1, b"k") + vi(3, 4) + ld(2, ld(1, b"s")))),
    "oneof: last member wins": in_span(attribute(ld(1, b"s") + vi(3, 5) + vi(2, 1))),
    "duplicate key, value of the last": in_span(
        attribute(vi(3, 1), b"a") + attribute(vi(3, 2), b"b") + attribute(vi(3, 3), b"a")
    ),
    "status twice": in_span(ld(15, ld(2, b"a")) + ld(15, vi(3, 2))),
    "key value twice": in_span(ld(9, ld(1, b"k") + ld(2, ld(1, b"s")) + ld(2, vi(3, 5)))),
    "array twice": in_span(attribute(ld(5, ld(1, vi(3, 1))) + ld(5, ld(1, vi(3, 2))))),
    "array, string, array": in_span(
        attribute(ld(5, ld(1, vi(3, 1))) + ld(1, b"x") + ld(5, ld(1, vi(3, 2))))
    ),
    "kvlist twice": in_span(attribute(ld(6, ld(1, ld(1, b"a"))) + ld(6, ld(1, ld(1, b"b"))))),
    "resource twice": ld(
        1, ld(1, ld(1, ld(1, b"a"))) + ld(1, ld(1, ld(1, b"b"))) + ld(2, ld(2, b""))
    ),
    "scope twice": ld(1, ld(2, ld(1, ld(1, b"s1")) + ld(2, b"") + ld(1, ld(2, b"v")))),
    "scope after its spans": ld(1, ld(2, ld(2, ld(5, b"x")) + ld(1, ld(1, b"late")))),
    "resource after its spans": ld(1, ld(2, ld(2, b"")) + ld(1, ld(1, ld(1, b"k")))),
    "two resource spans": ld(1, ld(2, ld(2, b""))) + ld(1, ld(2, ld(2, b"") + ld(2, b""))),
    "trace_id twice": in_span(ld(1, b"\x01") + ld(1, b"\x02\x03")),
    "name twice, first invalid": in_span(ld(5, b"\xff") + ld(5, b"ok")),
    "surrogate in a name": in_span(ld(5, b"\xed\xa0\x80")),
    "invalid UTF-8 in trace_state": in_span(ld(3, b"\xff")),
    "invalid UTF-8 in a link attribute": in_span(
        ld(13, ld(4, ld(1, b"k") + ld(2, ld(1, b"\xff"))))
    ),
    "corrupt link": in_span(ld(13, ld(4, b"\x0a\x05"))),
    "invalid UTF-8 in an entity ref": ld(1, ld(1, ld(3, ld(1, b"\xff")))),
    "invalid UTF-8 in a scope version": ld(1, ld(2, ld(1, ld(2, b"\xff")))),
    "invalid UTF-8 in a scope attribute": ld(1, ld(2, ld(1, ld(3, ld(1, b"\xff"))))),
    "invalid UTF-8 in a schema url": ld(1, ld(3, b"\xff")),
    "nesting 25": nested_arrays(25),
    "nesting 30": nested_arrays(30),
    "nesting 47 (protobuf's deepest)": nested_arrays(47),
    "nesting 48": nested_arrays(48),
    "nesting 200": nested_arrays(200),
}


@pytest.mark.parametrize("body", EDGE_CASES.values(), ids=EDGE_CASES.keys())
def test_edge_cases_decode_identically(body: bytes) -> None:
    assert_paths_agree(body)


#: Every string field, whether the Python path reads it or protobuf only checks it.
STRING_FIELDS: dict[str, Callable[[bytes], bytes]] = {
    "span name": lambda s: in_span(ld(5, s)),
    "trace_state": lambda s: in_span(ld(3, s)),
    "attribute key": lambda s: in_span(ld(9, ld(1, s) + ld(2, vi(3, 1)))),
    "string value": lambda s: in_span(attribute(ld(1, s))),
    "kvlist key": lambda s: in_span(attribute(ld(6, ld(1, ld(1, s))))),
    "event name": lambda s: in_span(ld(11, ld(2, s))),
    "status message": lambda s: in_span(ld(15, ld(2, s))),
    "link trace_state": lambda s: in_span(ld(13, ld(3, s))),
    "scope name": lambda s: ld(1, ld(2, ld(1, ld(1, s)))),
    "scope version": lambda s: ld(1, ld(2, ld(1, ld(2, s)))),
    "scope schema_url": lambda s: ld(1, ld(2, ld(3, s))),
    "resource key": lambda s: ld(1, ld(1, ld(1, ld(1, s)))),
    "resource schema_url": lambda s: ld(1, ld(3, s)),
    "entity ref key": lambda s: ld(1, ld(1, ld(3, ld(3, s)))),
}
#: One character of each UTF-8 length at both ends of its range, around the surrogates.
VALID_UTF8 = "a\x7f\x80\u07ff\u0800\ud7ff\ue000\uffff\U00010000\U0010ffff".encode()


@pytest.mark.parametrize("field", STRING_FIELDS)
@pytest.mark.parametrize("text", [VALID_UTF8, *INVALID_UTF8], ids=repr)
def test_utf8_is_checked_in_every_string_field(field: str, text: bytes) -> None:
    body = STRING_FIELDS[field](b"ok " + text + b" ok")
    compiled = assert_paths_agree(body)
    assert (compiled is not None) == (text == VALID_UTF8)


def test_compiled_decoder_takes_ordinary_unusual_encodings() -> None:
    """Cases that need no fallback are decoded by the compiled path itself."""
    for name in (
        "kind -1",
        "kind 4294967301",
        "status code 2147483648",
        "overlong int",
        "largest field number",
        "string_value_strindex last",
        "duplicate key, value of the last",
        "scope after its spans",
        "resource after its spans",
        "nesting 25",
    ):
        assert fast(EDGE_CASES[name]) is not None, name
    assert [s.otel_kind for s in fast(EDGE_CASES["kind -1"]) or []] == [-1]
    assert [s.otel_kind for s in fast(EDGE_CASES["kind 4294967301"]) or []] == [5]


def test_no_references_leak() -> None:
    """Decoding, declining and failing on malformed input free everything they made."""
    sim_body = sim_bodies()[0]
    bodies = [*EDGE_CASES.values(), sim_body, sim_body[:5000]]
    for body in bodies:  # warm up caches (interned strings, free lists)
        for _ in range(3):
            fast(body)
    before = sys.getallocatedblocks()
    for _ in range(200):
        for body in bodies:
            fast(body)
    assert sys.getallocatedblocks() - before < 200


# -- the simulator's realistic batches --------------------------------------------------------


def sim_bodies() -> list[bytes]:
    raw: list[RawSpan] = []
    for chunk in simulate(SimConfig(seed=5, days=1, sessions_per_day=200, max_spans=1200)):
        raw.extend(chunk.spans)
    return [encode_otlp(batch) for batch in trace_batches(raw, 500)]


def test_simulator_batches_decode_identically() -> None:
    bodies = sim_bodies()
    assert len(bodies) >= 2
    decoded: list[RawSpan] = []
    for body in bodies:
        compiled = assert_paths_agree(body)
        assert compiled is not None, "the compiled decoder declined a simulator batch"
        decoded.extend(compiled)
    assert len(decoded) >= 1000
    assert any(span.events for span in decoded)
