"""The committed gRPC code in ``issuer/api`` is exactly what ``tools/gen_proto.py`` makes now.

Plus the proto style rules the generated descriptors let us check cheaply:
versioned package, enum zero values ``*_UNSPECIFIED``, one request/response
message per RPC named after it.
"""

from __future__ import annotations

import pytest

pytest.importorskip("grpc_tools")

from tools import gen_proto  # noqa: E402


def test_generated_code_is_up_to_date():
    fresh = gen_proto.generate()
    assert sorted(fresh) == sorted(gen_proto.committed()), "generated file set differs"
    lines = gen_proto.diff(fresh, gen_proto.committed())
    assert not lines, "issuer/api is stale; run `python -m tools.gen_proto`:\n" + "".join(lines[:60])


def test_generated_imports_point_at_issuer_api():
    for name, text in gen_proto.generate().items():
        assert "from healthcode.issuer.v1 import" not in text, name
        assert "import healthcode." not in text, name


def _files():
    from issuer.api import common_pb2, health_codes_pb2, resident_index_pb2

    return [common_pb2.DESCRIPTOR, resident_index_pb2.DESCRIPTOR, health_codes_pb2.DESCRIPTOR]


def test_package_is_versioned():
    for fd in _files():
        assert fd.package == "healthcode.issuer.v1", fd.name
        assert fd.name.startswith("healthcode/issuer/v1/"), fd.name


def test_enum_zero_values_are_unspecified():
    enums = [e for fd in _files() for e in fd.enum_types_by_name.values()]
    assert enums
    for enum in enums:
        prefix = "".join("_" + c if c.isupper() else c.upper() for c in enum.name).lstrip("_")
        assert enum.values_by_number[0].name == f"{prefix}_UNSPECIFIED", enum.name
        for value in enum.values:
            assert value.name.startswith(prefix + "_"), value.name


def test_one_request_and_response_message_per_rpc():
    used: set[str] = set()
    services = [s for fd in _files() for s in fd.services_by_name.values()]
    assert {s.name for s in services} == {"ResidentIndex", "HealthCodes"}
    for service in services:
        for method in service.methods:
            assert method.input_type.name == f"{method.name}Request"
            assert method.output_type.name == f"{method.name}Response"
            assert method.input_type.full_name not in used and method.output_type.full_name not in used
            used |= {method.input_type.full_name, method.output_type.full_name}
            assert not method.client_streaming and not method.server_streaming


def test_every_definition_is_documented():
    """Each message, enum, value, field, oneof, service and rpc has a `//` comment just above it."""
    import re

    definition = re.compile(
        r"^\s*(message|enum|service|rpc|oneof)\s"
        r"|^\s*(optional\s+|repeated\s+)?[\w.]+\s+\w+\s*=\s*\d+;"  # a field
        r"|^\s*[A-Z][A-Z0-9_]*\s*=\s*\d+;"  # an enum value
    )
    undocumented = []
    for path in sorted(p for directory, _ in gen_proto.PROTO_PACKAGES.values() for p in directory.glob("*.proto")):
        previous = ""
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if definition.match(line) and not previous.lstrip().startswith("//"):
                undocumented.append(f"{path.name}:{lineno}: {line.strip()}")
            if line.strip():
                previous = line
    assert undocumented == []
