"""Generate the issuer's gRPC code from ``proto/`` into ``issuer/api/``.

    python -m tools.gen_proto           # (re)write issuer/api/*_pb2.py, *_pb2.pyi, *_pb2_grpc.py
    python -m tools.gen_proto --check   # exit 1 if the committed files differ from a fresh run

Two proto packages go there: ``healthcode.issuer.v1`` (the issuer API) and
``healthcode.admin.v1`` (``key_admin.proto``, the KeyAdmin service). Runs
``grpc_tools.protoc`` (``--python_out --pyi_out --grpc_python_out``,
``-I proto`` plus grpc_tools' bundled well-known protos) into a temporary
directory, then rewrites the generated imports
``from healthcode.issuer.v1 import x_pb2`` (and ``healthcode.admin.v1``) to
``from issuer.api import x_pb2``: the proto package path would otherwise
shadow our core package ``healthcode``.
The output depends on the grpcio-tools version (its protoc and its version
checks are written into the files), so regenerate with the pinned one.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.resources
import pathlib
import re
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "proto"
PROTO_DIR = PROTO_ROOT / "healthcode" / "issuer" / "v1"
OUT_DIR = ROOT / "issuer" / "api"
PROTO_PACKAGE = "healthcode.issuer.v1"
#: Every proto package generated into ``OUT_DIR``, with its directory under ``proto/``.
PROTO_PACKAGES = {
    PROTO_PACKAGE: PROTO_DIR,
    "healthcode.admin.v1": PROTO_ROOT / "healthcode" / "admin" / "v1",
}
PYTHON_PACKAGE = "issuer.api"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")

_IMPORT_RE = re.compile(
    rf"^(\s*)from (?:{'|'.join(re.escape(p) for p in PROTO_PACKAGES)}) import ", re.MULTILINE
)


def _rewrite(text: str) -> str:
    return _IMPORT_RE.sub(rf"\1from {PYTHON_PACKAGE} import ", text)


def generate() -> dict[str, str]:
    """Run protoc on every ``*.proto`` of :data:`PROTO_PACKAGES`; return {file name: rewritten text}."""
    from grpc_tools import protoc  # type: ignore[import-untyped]  # grpc_tools ships no stubs or py.typed

    protos = []
    for directory in PROTO_PACKAGES.values():
        found = sorted(directory.glob("*.proto"))
        if not found:
            raise SystemExit(f"no .proto files under {directory}")
        protos += found
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(str(p.relative_to(PROTO_ROOT)) for p in protos),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        files: dict[str, str] = {}
        for package in PROTO_PACKAGES:
            produced = pathlib.Path(tmp) / package.replace(".", "/")
            for path in sorted(produced.iterdir()):
                if path.name.endswith(GENERATED_SUFFIXES):
                    if path.name in files:
                        raise SystemExit(f"two proto packages generate {path.name}")
                    files[path.name] = _rewrite(path.read_text(encoding="utf-8"))
        return dict(sorted(files.items()))


def committed() -> dict[str, str]:
    """The generated files now in ``issuer/api/``."""
    return {
        path.name: path.read_text(encoding="utf-8")
        for path in sorted(OUT_DIR.glob("*"))
        if path.name.endswith(GENERATED_SUFFIXES)
    }


def diff(fresh: dict[str, str], current: dict[str, str]) -> list[str]:
    """Unified diff lines between a fresh generation and the committed files (empty when equal)."""
    lines: list[str] = []
    for name in sorted(fresh.keys() | current.keys()):
        a, b = current.get(name, ""), fresh.get(name, "")
        if a != b:
            lines += difflib.unified_diff(
                a.splitlines(keepends=True), b.splitlines(keepends=True),
                f"committed/{name}", f"generated/{name}",
            )
    return lines


def write(files: dict[str, str]) -> None:
    """Replace ``issuer/api``'s generated files with ``files`` (``__init__.py`` is left alone)."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name in committed().keys() - files.keys():
        (OUT_DIR / name).unlink()
    for name, text in files.items():
        path = OUT_DIR / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gen_proto", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if issuer/api differs from a fresh generation")
    args = parser.parse_args(argv)
    fresh = generate()
    if args.check:
        lines = diff(fresh, committed())
        if lines:
            sys.stdout.writelines(lines)
            print("\nissuer/api is stale: run `python -m tools.gen_proto`", file=sys.stderr)
            return 1
        print(f"issuer/api is up to date ({len(fresh)} files)")
        return 0
    write(fresh)
    print(f"wrote {len(fresh)} files to {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
