"""Benchmark of the pure core (issue: code format v1).

Prints, from one run, interleaved and as ratios to baselines measured in the
same rounds:

* verify throughput of a text code (Base45 + COSE + signature + windows)
  against a raw ``cryptography`` P-256 verify of a message of the same size;
* the same codes verified by python-cwt (an independent COSE/CWT library);
* EdDSA and SM2 verify against their raw primitives;
* sign throughput per algorithm;
* code size in bytes and the QR version at ECC level M;
* QR render (PNG, SVG) and image decode time, against qrcode's defaults.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import platform
import sys

import healthcode as hc
from healthcode.base45 import b45decode
from healthcode.codec import decode_unverified

from ._measure import best_time, interleaved

POOL = 64
PROVINCE = hc.ProvinceCode("33")


def _setup(alg: hc.Algorithm, now: dt.datetime):
    key = hc.generate_signing_key(alg)
    signer = hc.SoftwareSigner(key)
    codes = [
        hc.sign_code(
            hc.CodeClaims(
                province=PROVINCE,
                subject=hc.main_index_id_from_bytes(os.urandom(16)),
                serial=int.from_bytes(os.urandom(3), "big"),
                issued_at=now - dt.timedelta(minutes=5),
                expires_at=now + dt.timedelta(days=7),
            ),
            signer,
        )
        for _ in range(POOL)
    ]
    ring = hc.Keyring(
        [
            hc.TrustedKey(
                kid=signer.kid, province=PROVINCE, public_key=key.public_key(),
                use_from=now - dt.timedelta(days=1), use_until=now + dt.timedelta(days=90),
                verify_until=now + dt.timedelta(days=120),
            )
        ]
    )
    return key, signer, codes, ring


def raw_es256_pool(message_size: int, pool_size: int = POOL):
    """A raw P-256 verify (cryptography) and ``pool_size`` signed messages: the baseline of the verify benches."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key()
    algorithm = ec.ECDSA(hashes.SHA256())
    pool = []
    for _ in range(pool_size):
        message = os.urandom(message_size)
        pool.append((private.sign(message, algorithm), message))
    return lambda item: public.verify(item[0], item[1], algorithm), pool


def run(*, rounds: int, seconds: float, out=sys.stdout) -> None:
    now = dt.datetime.now(dt.timezone.utc)  # the benchmark is a shell: it may read the clock
    setups = {alg: _setup(alg, now) for alg in hc.Algorithm}
    es_key, es_signer, es_codes, es_ring = setups[hc.Algorithm.ES256]
    signed_size = len(decode_unverified(es_codes[0]).signed_bytes)
    raw_verify, raw_pool = raw_es256_pool(signed_size)

    def core_verify(ring):
        return lambda code: hc.verify(code, ring, now=now)

    contenders = {
        "raw P-256 verify (cryptography)": (raw_verify, raw_pool),
        "core verify ES256 (text code)": (core_verify(es_ring), es_codes),
    }
    try:
        import cwt

        cwt_key = cwt.COSEKey.from_pem(es_key.public_key().pem(), alg="ES256", kid=es_signer.kid)
        contenders["python-cwt decode ES256 (text code)"] = (
            lambda code: cwt.decode(b45decode(code[5:]), cwt_key), es_codes,
        )
    except ImportError:  # the dev extra is not installed
        pass

    ed_key, _, ed_codes, ed_ring = setups[hc.Algorithm.EDDSA]
    ed_public = ed_key.public_key()
    ed_raw = [(decode_unverified(c).signature, decode_unverified(c).signed_bytes) for c in ed_codes]
    sm_key, _, sm_codes, sm_ring = setups[hc.Algorithm.SM2_SM3]
    sm_public = sm_key.public_key()
    sm_raw = [(decode_unverified(c).signature, decode_unverified(c).signed_bytes) for c in sm_codes]

    print(f"# Core benchmark  ({platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, {rounds} interleaved rounds of {seconds:g} s)\n", file=out)
    verify = interleaved(contenders, rounds=rounds, seconds=seconds)
    base = verify["raw P-256 verify (cryptography)"]
    print(f"## Verify (ES256; baseline: raw P-256 verify of a {signed_size}-byte message)\n", file=out)
    print("| contender | median ops/s | ratio to baseline (median, min-max) |", file=out)
    print("|---|---:|---|", file=out)
    for name, series in verify.items():
        med, lo, hi = series.ratio_to(base)
        print(f"| {name} | {series.median:,.0f} | {med:.3f} ({lo:.3f}-{hi:.3f}) |", file=out)

    others = interleaved(
        {
            "raw Ed25519 verify": (lambda item: ed_public.verify(*item), ed_raw),
            "core verify EdDSA": (core_verify(ed_ring), ed_codes),
            "raw SM2 verify (gmalglib)": (lambda item: sm_public.verify(*item), sm_raw),
            "core verify SM2-SM3": (core_verify(sm_ring), sm_codes),
        },
        rounds=rounds,
        seconds=seconds / 2,
    )
    print("\n## Verify, other algorithms (baseline: the raw primitive on the same bytes)\n", file=out)
    print("| algorithm | raw ops/s | core ops/s | core / raw (median) |", file=out)
    print("|---|---:|---:|---:|", file=out)
    for alg, raw_name, core_name in (
        ("EdDSA", "raw Ed25519 verify", "core verify EdDSA"),
        ("SM2-SM3", "raw SM2 verify (gmalglib)", "core verify SM2-SM3"),
    ):
        med, _, _ = others[core_name].ratio_to(others[raw_name])
        print(f"| {alg} | {others[raw_name].median:,.0f} | {others[core_name].median:,.0f} | {med:.3f} |", file=out)

    claims = [
        hc.CodeClaims(province=PROVINCE, subject=hc.main_index_id_from_bytes(os.urandom(16)), serial=i,
                      issued_at=now, expires_at=now + dt.timedelta(days=7))
        for i in range(POOL)
    ]
    signing = interleaved(
        {alg.value: ((lambda signer: lambda c: hc.sign_code(c, signer))(setups[alg][1]), claims)
         for alg in hc.Algorithm},
        rounds=rounds,
        seconds=seconds / 2,
    )
    print("\n## Sign (whole code: claims, COSE, signature, Base45)\n", file=out)
    print("| algorithm | median codes/s |", file=out)
    print("|---|---:|", file=out)
    for name, series in signing.items():
        print(f"| {name} | {series.median:,.0f} |", file=out)

    _sizes_and_qr(setups, out=out)


def _sizes_and_qr(setups, *, out) -> None:
    try:
        from issuer.render import qr_version, render_png, render_svg
        from verifier.images import decode_image
        import qrcode
    except ImportError as exc:  # issuer/verifier extras not installed
        print(f"\n(QR figures skipped: {exc})", file=out)
        return
    print("\n## Size and QR version (ECC level M)\n", file=out)
    print("| algorithm | text chars | COSE bytes | QR version at M (modules) |", file=out)
    print("|---|---:|---:|---|", file=out)
    for alg, (_, _, codes, _) in setups.items():
        text = max(codes, key=len)
        version = qr_version(text)
        print(f"| {alg.value} | {len(text)} | {len(b45decode(text[5:]))} | {version} "
              f"({17 + 4 * version}x{17 + 4 * version}) |", file=out)

    text = max(setups[hc.Algorithm.ES256][2], key=len)

    def qrcode_default():
        buffer = io.BytesIO()
        qrcode.make(text).save(buffer)

    png = render_png(text)
    figures = [
        ("qrcode.make(text).save(png) (library defaults)", best_time(qrcode_default, number=10)),
        ("render_png (ours)", best_time(lambda: render_png(text))),
        ("render_svg (ours)", best_time(lambda: render_svg(text))),
        ("decode_image of our PNG (pyzbar)", best_time(lambda: decode_image(png), number=10)),
    ]
    print("\n## QR render and decode (best of 7 means)\n", file=out)
    print("| operation | ms per code |", file=out)
    print("|---|---:|", file=out)
    for name, seconds in figures:
        print(f"| {name} | {seconds * 1000:.2f} |", file=out)
