"""Generate the gRPC code from ``proto/`` into each service's ``api`` package.

    python -m tools.gen_proto           # (re)write issuer/api/, national/api/: *_pb2.py, *_pb2.pyi, *_pb2_grpc.py
    python -m tools.gen_proto --check   # exit 1 if the committed files differ from a fresh run

:data:`PROTO_PACKAGES` maps each proto package to its Python package:
``healthcode.issuer.v1`` (the issuer API) and ``healthcode.admin.v1`` (the
KeyAdmin service) go to ``issuer.api``, ``healthcode.national.v1`` (the
national index) to ``national.api``, ``healthcode.publisher.v1`` (the national
trust publisher) to ``publisher.api``. Runs
``grpc_tools.protoc`` (``--python_out --pyi_out --grpc_python_out``,
``-I proto`` plus grpc_tools' bundled well-known protos) into a temporary
directory, then rewrites the generated imports
``from healthcode.issuer.v1 import x_pb2`` (and the others) to
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
#: Every proto package, with its directory under ``proto/`` and the Python package its code goes to.
PROTO_PACKAGES: dict[str, tuple[pathlib.Path, str]] = {
    "healthcode.issuer.v1": (PROTO_ROOT / "healthcode" / "issuer" / "v1", "issuer.api"),
    "healthcode.admin.v1": (PROTO_ROOT / "healthcode" / "admin" / "v1", "issuer.api"),
    "healthcode.national.v1": (PROTO_ROOT / "healthcode" / "national" / "v1", "national.api"),
    "healthcode.publisher.v1": (PROTO_ROOT / "healthcode" / "publisher" / "v1", "publisher.api"),
}
OUT_DIRS = sorted({ROOT / python.replace(".", "/") for _, python in PROTO_PACKAGES.values()})
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")

_IMPORT_RE = re.compile(rf"^(\s*)from ({'|'.join(re.escape(p) for p in PROTO_PACKAGES)}) import ", re.MULTILINE)


def _rewrite(text: str) -> str:
    return _IMPORT_RE.sub(lambda m: f"{m.group(1)}from {PROTO_PACKAGES[m.group(2)][1]} import ", text)


def generate() -> dict[str, str]:
    """Run protoc on every ``*.proto`` of :data:`PROTO_PACKAGES`; return {path from the root: rewritten text}."""
    from grpc_tools import protoc  # type: ignore[import-untyped]  # grpc_tools ships no stubs or py.typed

    protos = []
    for directory, _ in PROTO_PACKAGES.values():
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
        for package, (_, python) in PROTO_PACKAGES.items():
            produced = pathlib.Path(tmp) / package.replace(".", "/")
            for path in sorted(produced.iterdir()):
                if path.name.endswith(GENERATED_SUFFIXES):
                    name = f"{python.replace('.', '/')}/{path.name}"
                    if name in files:
                        raise SystemExit(f"two proto packages generate {name}")
                    files[name] = _rewrite(path.read_text(encoding="utf-8"))
        return dict(sorted(files.items()))


def committed() -> dict[str, str]:
    """The generated files now in the output packages (``issuer/api/``, ``national/api/``, ...)."""
    return {
        str(path.relative_to(ROOT)): path.read_text(encoding="utf-8")
        for out_dir in OUT_DIRS
        for path in sorted(out_dir.glob("*"))
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
    """Replace the output packages' generated files with ``files`` (``__init__.py`` is left alone)."""
    for out_dir in OUT_DIRS:
        out_dir.mkdir(parents=True, exist_ok=True)
    for name in committed().keys() - files.keys():
        (ROOT / name).unlink()
    for name, text in files.items():
        path = ROOT / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gen_proto", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed code is stale")
    args = parser.parse_args(argv)
    fresh = generate()
    if args.check:
        lines = diff(fresh, committed())
        if lines:
            sys.stdout.writelines(lines)
            print("\nthe generated code is stale: run `python -m tools.gen_proto`", file=sys.stderr)
            return 1
        print(f"the generated code is up to date ({len(fresh)} files)")
        return 0
    write(fresh)
    print(f"wrote {len(fresh)} files to {', '.join(str(d.relative_to(ROOT)) for d in OUT_DIRS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
