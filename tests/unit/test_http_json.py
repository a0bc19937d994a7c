"""The HTTP API's JSON (issuer/http_api.py): the fast encoder writes what ``json_format`` writes, on every
message of the public services, and the strict decoder's refusals name fields without echoing values."""

from __future__ import annotations

import json

import pytest
from connectrpc.errors import ConnectError
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor as FD
from google.rpc import error_details_pb2

from issuer.api import health_codes_pb2, resident_index_pb2, wallets_pb2
from issuer.http_api import StrictJsonCodec, message_to_json

MODULES = [resident_index_pb2, health_codes_pb2, wallets_pb2]
SAMPLES = {FD.TYPE_STRING: "健康码 ok", FD.TYPE_BYTES: b"\x00\xff binary", FD.TYPE_BOOL: True,
           FD.TYPE_INT64: -(2**40), FD.TYPE_UINT64: 2**60, FD.TYPE_INT32: -7, FD.TYPE_UINT32: 7}


def _fill(message, depth: int = 0) -> None:
    """Set every field of ``message`` (nested, repeated twice, enums to their last value)."""
    for field in message.DESCRIPTOR.fields:
        repeated = field.is_repeated
        if field.type == FD.TYPE_MESSAGE:
            if field.message_type.full_name == "google.protobuf.Timestamp":
                for m in ([getattr(message, field.name).add() for _ in range(2)] if repeated
                          else [getattr(message, field.name)]):
                    m.seconds, m.nanos = 1_765_000_000, 123_000_000
            elif depth < 3:
                for m in ([getattr(message, field.name).add() for _ in range(2)] if repeated
                          else [getattr(message, field.name)]):
                    _fill(m, depth + 1)
            continue
        if field.type == FD.TYPE_ENUM:
            value = field.enum_type.values[-1].number
        else:
            value = SAMPLES[field.type]
        if repeated:
            getattr(message, field.name).extend([value, value])
        elif field.containing_oneof is None or message.WhichOneof(field.containing_oneof.name) is None:
            setattr(message, field.name, value)


def _messages():
    for module in MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                for desc in (method.input_type, method.output_type):
                    yield desc.full_name, getattr(module, desc.name)


@pytest.mark.parametrize("name, cls", sorted(set(_messages()), key=lambda x: x[0]))
def test_the_fast_encoder_writes_what_json_format_writes(name, cls):
    full = cls()
    _fill(full)
    for message in (cls(), full):
        assert message_to_json(message) == json_format.MessageToDict(message), name
        decoded = StrictJsonCodec().decode(StrictJsonCodec().encode(message), cls)
        assert decoded == message  # and it reads back


def _violations(error: ConnectError) -> list[tuple[str, str]]:
    out = []
    for detail in error.details:
        if detail.type_name == "google.rpc.BadRequest":
            out += [(v.field, v.reason) for v in error_details_pb2.BadRequest.FromString(
                detail.message_bytes).field_violations]
    return out


SECRET = "11010519491231002X"


@pytest.mark.parametrize("body, expected", [
    (b"{", [("", "FORMAT")]),
    (b"null", [("", "FORMAT")]),
    (b'"' + SECRET.encode() + b'"', [("", "FORMAT")]),
    (b"\xff\xfe", [("", "FORMAT")]),
    (json.dumps({"primary": {"number": SECRET}, "nope": 1}).encode(), [("nope", "UNKNOWN_FIELD")]),
    (json.dumps({"supplementary": [{"number": SECRET}, {"number": SECRET, "nope": 1}]}).encode(),
     [("supplementary[1].nope", "UNKNOWN_FIELD")]),
    (json.dumps({"primary": {"type": SECRET}}).encode(), [("primary.type", "TYPE")]),
    (json.dumps({"primary": {"number": 12}}).encode(), [("primary.number", "TYPE")]),
    (json.dumps({"primary": [SECRET]}).encode(), [("primary", "TYPE")]),
    (json.dumps({"primary": SECRET}).encode(), [("primary", "TYPE")]),
    (json.dumps({"supplementary": {"a": SECRET}}).encode(), [("supplementary", "TYPE")]),
    (json.dumps({"supplementary": [SECRET]}).encode(), [("supplementary[0]", "TYPE")]),
    (json.dumps({"primary": {SECRET: 1}, "x": 1, "e12345678": 2}).encode(),
     [("primary", "UNKNOWN_FIELD"), ("x", "UNKNOWN_FIELD"), ("", "UNKNOWN_FIELD")]),
    (json.dumps({"primary": {"type": "DOCUMENT_TYPE_RESIDENT_ID", "number": SECRET}, "supplementary": None}).encode(),
     None),
])
def test_the_strict_decoder_names_the_field_and_never_the_value(body, expected):
    if expected is None:  # accepted (null is the default value)
        assert StrictJsonCodec().decode(body, resident_index_pb2.RegisterResidentRequest).primary.number == SECRET
        return
    with pytest.raises(ConnectError) as e:
        StrictJsonCodec().decode(body, resident_index_pb2.RegisterResidentRequest)
    assert e.value.code.value == "invalid_argument"
    assert _violations(e.value) == expected
    assert SECRET not in e.value.message and SECRET not in str(_violations(e.value))
    assert "12345678" not in e.value.message
