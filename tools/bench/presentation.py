"""Benchmark of live codes (issue 13): ``python -m tools.bench presentation``.

Two figures, from one run, interleaved round by round (``_measure.interleaved``):

* **Dynamic verify at the terminal**: the terminal's judgement of a live code
  (:class:`verifier.verdict.Judge` with its replay cache: the prefix dispatch,
  :func:`healthcode.presentation.verify_presentation` with the keyring and a
  revocation set, then ``ReplayCache.admit``), as a ratio to a raw P-256 ECDSA
  verify (``cryptography``) of a message the size of the credential's signed
  bytes, measured in the same rounds. Target >= 0.45x (a presentation is two
  signatures: 0.5x is the floor of any design). The core's
  ``verify_presentation`` alone and the terminal's judgement of a static code
  are measured next to it. Each presentation is a distinct credential; the
  replay cache is emptied after each pass over the pool (once per 512 scans),
  or the second pass would be all replays.
* **Where a dynamic verification's time goes**: its parts measured alone in
  the same way (the form, loading the holder key from ``cnf``, the device
  signature with the key loaded, the credential as a code), against the same
  baseline.
* **Producing one presentation** (``encode_presentation``: the device
  signature over the domain-separated bytes, CBOR, Base45) in CPU time per
  presentation. Target <= 1 ms.
* **SM2 device keys** (where a province allows them): the same terminal
  judgement and core verification of presentations whose credential binds an
  SM2 key (SM2-SM3 device signature, ``gmalglib``), in the same interleaved
  rounds as the P-256 ones, and an SM2 presentation's production; then the
  QR version at ECC M of a presentation with a P-256 or an SM2 device key
  (ES256 and SM2-SM3 credentials, serial 2^32-1, measured with ``qrcode``).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys

import healthcode as hc
from healthcode.algorithms import Algorithm, generate_signing_key
from healthcode.codec import decode_unverified
from healthcode.presentation import ReplayCache, encode_presentation, holder_cnf, step_at, verify_presentation
from healthcode.revocation import RevocationSet, RevocationState

from ._measure import interleaved
from .core import raw_es256_pool

POOL = 512
PROVINCE = hc.ProvinceCode("33")
_DEVICE_INPUT = bytes(51)  # the size of what the phone signs (context, step, SHA-256)


def _setup(now: dt.datetime):
    key = generate_signing_key()
    signer = hc.SoftwareSigner(key)
    ring = hc.Keyring([hc.TrustedKey(kid=signer.kid, province=PROVINCE, public_key=key.public_key(),
                                     use_from=now - dt.timedelta(days=1), use_until=now + dt.timedelta(days=90),
                                     verify_until=now + dt.timedelta(days=120))])
    devices = [generate_signing_key() for _ in range(POOL)]
    credentials = [
        hc.sign_code(hc.CodeClaims(province=PROVINCE, subject=hc.main_index_id_from_bytes(os.urandom(16)),
                                   serial=1_000_000 + i, issued_at=now - dt.timedelta(days=1),
                                   expires_at=now + dt.timedelta(days=6),
                                   holder_key=holder_cnf(device.public_key().spki_der()[-65:])), signer)
        for i, device in enumerate(devices)
    ]
    step = step_at(now)
    presentations = [encode_presentation(c, step, d) for c, d in zip(credentials, devices)]
    static = [hc.sign_code(hc.CodeClaims(province=PROVINCE, subject=hc.main_index_id_from_bytes(os.urandom(16)),
                                         serial=i, issued_at=now - dt.timedelta(days=1),
                                         expires_at=now + dt.timedelta(days=6)), signer) for i in range(POOL)]
    revocation = RevocationSet([RevocationState("33", signer.kid, seq=1, universe=10_000_000,
                                                serials=range(5, 10_000_000, 997))])
    sm2_devices = [generate_signing_key(Algorithm.SM2_SM3) for _ in range(POOL)]
    sm2_credentials = [
        hc.sign_code(hc.CodeClaims(province=PROVINCE, subject=hc.main_index_id_from_bytes(os.urandom(16)),
                                   serial=2_000_000 + i, issued_at=now - dt.timedelta(days=1),
                                   expires_at=now + dt.timedelta(days=6),
                                   holder_key=holder_cnf(device.public_key().spki_der()[-65:], Algorithm.SM2_SM3)),
                     signer)
        for i, device in enumerate(sm2_devices)
    ]
    sm2_presentations = [encode_presentation(c, step, d) for c, d in zip(sm2_credentials, sm2_devices)]
    sm2 = (sm2_credentials, sm2_devices, sm2_presentations)
    return ring, revocation, credentials, devices, presentations, static, sm2


def _qr_rows(now: dt.datetime) -> list[tuple[str, int, int, int, int]]:
    """(name, credential COSE bytes, presentation text length, version at M, at L) for each device-key kind."""
    import qrcode  # the wallet extra

    from healthcode.base45 import b45decode

    rows = []
    for issuer_alg in (Algorithm.ES256, Algorithm.SM2_SM3):
        signer = hc.SoftwareSigner(generate_signing_key(issuer_alg))
        for device_alg in (Algorithm.ES256, Algorithm.SM2_SM3):
            device = generate_signing_key(device_alg)
            credential = hc.sign_code(hc.CodeClaims(
                province=PROVINCE, subject=hc.main_index_id_from_bytes(os.urandom(16)), serial=2**32 - 1,
                issued_at=now, expires_at=now + dt.timedelta(days=7),
                holder_key=holder_cnf(device.public_key().spki_der()[-65:], device_alg)), signer)
            text = encode_presentation(credential, step_at(now), device)
            versions = []
            for level in (qrcode.constants.ERROR_CORRECT_M, qrcode.constants.ERROR_CORRECT_L):
                qr = qrcode.QRCode(error_correction=level)
                qr.add_data(text)
                qr.make(fit=True)
                versions.append(qr.version)
            name = f"{issuer_alg} credential, {'P-256' if device_alg is Algorithm.ES256 else 'SM2'} device key"
            rows.append((name, len(b45decode(credential[5:])), len(text), versions[0], versions[1]))
    return rows


def run(*, rounds: int, seconds: float, out=sys.stdout) -> None:
    from verifier.verdict import Judge, StaticCodes

    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)  # the benchmark is a shell: it may read the clock
    ring, revocation, credentials, devices, presentations, static, sm2 = _setup(now)
    sm2_credentials, sm2_devices, sm2_presentations = sm2
    signed_size = len(decode_unverified(credentials[0]).signed_bytes)
    raw_verify, raw_pool = raw_es256_pool(signed_size, POOL)

    class Terminal:
        """The terminal's judge, its replay cache emptied after each pass over the pool (one per pool)."""

        def __init__(self) -> None:
            self.judge = Judge(static_codes=StaticCodes.CHECK_ID, clock_skew=dt.timedelta(minutes=5),
                               replay=ReplayCache())
            self.seen = 0

        def __call__(self, text: str) -> None:
            verdict = self.judge(text, None, ring, revocation, None, now)
            assert verdict.reason is None, verdict
            self.seen += 1
            if self.seen == POOL:
                self.judge.replay, self.seen = ReplayCache(), 0

    static_judge = Judge(static_codes=StaticCodes.CHECK_ID, clock_skew=dt.timedelta(minutes=5))
    contenders = {
        "raw P-256 verify (cryptography)": (raw_verify, raw_pool),
        "terminal: live code (judge: verify_presentation + replay cache)": (Terminal(), presentations),
        "core verify_presentation (no replay cache)":
            (lambda text: verify_presentation(text, ring, now=now, revocation=revocation), presentations),
        "terminal: static code (judge: verify + policy)":
            (lambda text: static_judge(text, None, ring, revocation, None, now), static),
        "terminal: live code, SM2 device key (judge + replay cache)": (Terminal(), sm2_presentations),
        "core verify_presentation, SM2 device key":
            (lambda text: verify_presentation(text, ring, now=now, revocation=revocation), sm2_presentations),
    }
    step = step_at(now)
    pairs = list(zip(credentials, devices))
    producing = {
        "P-256 sign of 51 bytes (the device key alone)": (lambda item: item[1].sign(_DEVICE_INPUT),
                                                          pairs),
        "encode_presentation (device signature + CBOR + Base45)":
            (lambda item: encode_presentation(item[0], step, item[1]), pairs),
        "encode_presentation, SM2 device key": (lambda item: encode_presentation(item[0], step, item[1]),
                                                list(zip(sm2_credentials, sm2_devices))),
    }

    print(f"# Live codes benchmark  ({platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, {rounds} interleaved rounds of {seconds:g} s)\n", file=out)
    verify = interleaved(contenders, rounds=rounds, seconds=seconds)
    base = verify["raw P-256 verify (cryptography)"]
    print(f"## Dynamic verify at the terminal (baseline: raw P-256 verify of a {signed_size}-byte message)\n",
          file=out)
    print("| contender | median ops/s | ratio to baseline (median, min-max) |", file=out)
    print("|---|---:|---|", file=out)
    for name, series in verify.items():
        med, lo, hi = series.ratio_to(base)
        print(f"| {name} | {series.median:,.0f} | {med:.3f} ({lo:.3f}-{hi:.3f}) |", file=out)
    med, _, _ = verify["terminal: live code (judge: verify_presentation + replay cache)"].ratio_to(base)
    print(f"\nTarget >= 0.45x: **{'met' if med >= 0.45 else 'NOT met'}** ({med:.3f}x).", file=out)
    sm2_med, _, _ = verify["terminal: live code, SM2 device key (judge + replay cache)"].ratio_to(
        verify["terminal: live code (judge: verify_presentation + replay cache)"])
    print(f"SM2 device key: the terminal's live-code rate is {sm2_med:.3f}x the P-256 device key's "
          f"(median of the per-round ratios).\n", file=out)

    from healthcode.codec import _decode_cose
    from healthcode.presentation import decode_presentation_unverified, device_signing_input, holder_key_from_cnf
    from healthcode.verify import verify_credential

    unverified = [decode_presentation_unverified(text) for text in presentations]
    verified = [verify_presentation(text, ring, now=now, revocation=revocation) for text in presentations]
    keyed = [(holder_key_from_cnf(v.credential.holder_key), u.device_signature,
              device_signing_input(u.credential_cose, u.step)) for u, v in zip(unverified, verified)]
    parts = [_decode_cose(u.credential_cose) for u in unverified]
    split = interleaved({
        "raw P-256 verify (cryptography)": (raw_verify, raw_pool),
        "(1) form: decode_presentation_unverified": (decode_presentation_unverified, presentations),
        "(3) the credential as a code: verify_credential": (
            lambda item: verify_credential(item, ring, now=now, revocation=revocation), parts),
        "(4) the holder key: holder_key_from_cnf": (holder_key_from_cnf, [v.credential.holder_key for v in verified]),
        "(5) the device signature, key loaded": (lambda item: item[0].verify(item[1], item[2]), keyed),
    }, rounds=rounds, seconds=seconds / 2)
    base = split["raw P-256 verify (cryptography)"]
    print("## Where a dynamic verification's time goes (each step alone, same baseline)\n", file=out)
    print("| step (docs/code-format.md 16.5) | median µs each | in raw verifies (median) |", file=out)
    print("|---|---:|---:|", file=out)
    for name, series in split.items():
        med, _, _ = series.ratio_to(base)
        print(f"| {name} | {1e6 / series.median:.1f} | {1 / med:.2f} |", file=out)
    print("", file=out)

    made = interleaved(producing, rounds=rounds, seconds=seconds / 2)
    print("## Producing one presentation (CPU time)\n", file=out)
    print("| operation | median per second | CPU time each |", file=out)
    print("|---|---:|---:|", file=out)
    for name, series in made.items():
        print(f"| {name} | {series.median:,.0f} | {1e6 / series.median:.0f} µs |", file=out)
    each = 1e3 / made["encode_presentation (device signature + CBOR + Base45)"].median
    print(f"\nTarget <= 1 ms: **{'met' if each <= 1 else 'NOT met'}** ({each:.3f} ms).\n", file=out)

    print("## Presentation QR size by device key (serial 2^32-1; qrcode, ECC M and L)\n", file=out)
    print("| credential, device key | credential COSE bytes | text chars | version at M | at L |", file=out)
    print("|---|---:|---:|---:|---:|", file=out)
    for name, cose, chars, at_m, at_l in _qr_rows(now):
        print(f"| {name} | {cose} | {chars} | {at_m} | {at_l} |", file=out)
