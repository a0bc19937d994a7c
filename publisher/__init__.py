"""The national trust publisher: provinces push their signed role, the publisher publishes it.

``healthcode-publisher serve`` (:mod:`publisher.app`) runs the gRPC service
``healthcode.publisher.v1.TrustPublisher`` (``proto/healthcode/publisher/v1``)
over the national trust repository (:mod:`keys.trustrepo`):

* :mod:`publisher.checks`: the checks of one push, pure (bytes in, a checked push out);
* :mod:`publisher.store`: pushes staged durably, then published (snapshot and timestamp);
* :mod:`publisher.service`: the servicer and the publication loop (batching, timestamp refresh);
* :mod:`publisher.client`: the client a provincial issuer and ``healthcode-keys status`` use;
* :mod:`publisher.errors`: the one error root and its reasons.
"""
