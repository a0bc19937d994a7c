"""The main job, end to end, on the embedded default.

Creates a province signing key, signs a health code for a new resident (bound
to a random main index ID), renders its QR as PNG, reads the code back from the
image, verifies it offline against the province's public key, and prints the
result. ``./dev demo`` runs this; ``--out`` chooses where the PNG goes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import pathlib
import sys

import healthcode as hc
from issuer.render import qr_version, render_png
from verifier.images import decode_image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="healthcode-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--province", default="33", help="GB/T 2260 province code (default 33, Zhejiang)")
    parser.add_argument("--algorithm", default="ES256", choices=[a.value for a in hc.Algorithm])
    parser.add_argument("--out", default="out", help="directory for the QR PNG (default ./out)")
    args = parser.parse_args(argv)

    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    province = hc.parse_province(args.province)

    key = hc.generate_signing_key(hc.Algorithm(args.algorithm))
    signer = hc.SoftwareSigner(key)
    trusted = hc.TrustedKey(
        kid=signer.kid, province=province, public_key=key.public_key(),
        use_from=now, use_until=now + dt.timedelta(days=90),
        verify_until=now + dt.timedelta(days=90 + 30),
    )
    print(f"1. province {province} ({hc.PROVINCES[province]}) key created: {args.algorithm}, kid {signer.kid.hex()}")

    resident = hc.main_index_id_from_bytes(os.urandom(16))
    claims = hc.CodeClaims(
        province=province, subject=resident, serial=1,
        issued_at=now, expires_at=now + dt.timedelta(days=7),
    )
    code = hc.sign_code(claims, signer)
    print(f"2. code signed for main index ID {resident}: {len(code)} characters, serial 1")

    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    png_path = out_dir / "demo-code.png"
    png_path.write_bytes(render_png(code))
    print(f"3. QR rendered to {png_path} (version {qr_version(code)}, ECC level M)")

    found = decode_image(png_path)
    print(f"4. read back from the image: {len(found)} code(s), identical: {found == [code]}")
    if found != [code]:
        print("   the image did not give back the code", file=sys.stderr)
        return 1

    result = hc.check(found[0], hc.Keyring([trusted]), now=now)
    if not result.valid:
        print(f"5. INVALID: {result.reason.value}: {result.detail}")
        return 1
    verified = result.code
    print(
        f"5. VALID: province {verified.province}, serial {verified.serial}, "
        f"issued {verified.issued_at:%Y-%m-%d %H:%M}Z, expires {verified.expires_at:%Y-%m-%d %H:%M}Z"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
