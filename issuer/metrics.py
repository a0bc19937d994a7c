"""The issuer's Prometheus metrics: codes issued by province, RPCs by method and status, latency."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from issuer.model import IssuedCode

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The issuer's Prometheus metrics, in their own registry (several servers may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.codes_issued = Counter(
            "healthcode_issuer_codes_issued",
            "Codes returned by IssueCode and RenewCode (idempotent replays included), by province.",
            ["province"],
            registry=self.registry,
        )
        self.rpcs = Counter(
            "healthcode_issuer_rpcs",
            "RPCs handled, by method and gRPC status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "healthcode_issuer_rpc_latency_seconds",
            "RPC latency in the server, by method.",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._issued_children: dict[str, Any] = {}

    def observe_rpc(self, method: str, code: str, latency: float) -> None:
        children = self._children.get((method, code))
        if children is None:  # labels() takes a lock and builds a key: do it once per series
            children = self._children[(method, code)] = (
                self.rpcs.labels(method, code), self.latency.labels(method))
        children[0].inc()
        children[1].observe(latency)

    def on_issued(self, code: IssuedCode) -> None:
        province = code.ref.province
        child = self._issued_children.get(province)
        if child is None:
            child = self._issued_children[province] = self.codes_issued.labels(province)
        child.inc()

