"""Generated gRPC code of the issuer API (``proto/healthcode/issuer/v1``). Do not edit.

Regenerate with ``python -m tools.gen_proto``; ``tests/unit/test_proto_generated.py``
fails when these files are stale. Wire types stay in :mod:`issuer.service`,
which converts them to and from the domain's types.
"""
