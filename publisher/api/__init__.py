"""Generated gRPC code of the national trust publisher API (``proto/healthcode/publisher/v1``). Do not edit.

Regenerate with ``python -m tools.gen_proto``; ``tests/unit/test_proto_generated.py``
fails when these files are stale.
"""
