"""The main job, end to end, on the embedded default (SQLite).

Sets up a throwaway province issuer (dev TLS PKI, signing key, vault key, API
key), starts the real gRPC issuer as a process, and drives it with a client:
registers a resident by their resident ID number, issues a health code (and
shows that a retry with the same idempotency key returns the same code),
renders the QR PNG through the API, reads the code back from the image, and
verifies it offline with the province's public key, as a hospital terminal
would. Then it stops the issuer gracefully. ``./dev demo`` runs this.
"""

from __future__ import annotations

import argparse
import datetime as dt
import pathlib
import secrets
import shutil
import sys
import uuid

import healthcode as hc
from issuer.client import IssuerClient
from issuer.devenv import DevEnvironment, ServerProcess
from issuer.documents import DocumentType, make_resident_id, parse_document
from verifier.images import decode_image


def _masked(number: str) -> str:
    return number[:3] + "*" * (len(number) - 7) + number[-4:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="healthcode-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--province", default="33", help="GB/T 2260 province code (default 33, Zhejiang)")
    parser.add_argument("--out", default="out/demo", help="working directory, recreated (default ./out/demo)")
    args = parser.parse_args(argv)

    now = dt.datetime.now(dt.timezone.utc)
    province = hc.parse_province(args.province)
    work = pathlib.Path(args.out)
    shutil.rmtree(work, ignore_errors=True)
    env = DevEnvironment.create(work, province=province, now=now)
    print(f"1. issuer for province {province} ({hc.PROVINCES[province]}) set up in {work}: "
          f"dev TLS PKI, ES256 key kid {env.public_key.key_id().hex()}, SQLite {env.database.name}")

    with ServerProcess(env) as server:
        print(f"2. issuer serving on {server.address} (TLS, API key auth); log in {server.log_path}")
        number = make_resident_id(province + "0106", dt.date(1990, 5, 17), secrets.randbelow(1000))
        document = parse_document(DocumentType.RESIDENT_ID, number, today=now.date())
        with IssuerClient(server.address, ca_pem=env.ca_pem, api_key=env.api_key) as client:
            main_index_id = client.find_or_register(document)
            print(f"3. resident {_masked(number)} registered: main index ID {main_index_id}")
            key = f"demo-{uuid.uuid4()}"
            code = client.issue(main_index_id, idempotency_key=key)
            retry = client.issue(main_index_id, idempotency_key=key)
            print(f"4. code issued: serial {code.ref.serial}, {len(code.code_text)} characters; "
                  f"retry with the same idempotency key returned the same code: {retry.code_text == code.code_text}")
            png = work / "code.png"
            png.write_bytes(client.render_png(code.ref))
            print(f"5. QR rendered by the issuer to {png}")
        exit_code = server.stop()
        print(f"6. issuer stopped gracefully (exit code {exit_code})")

    found = decode_image(png)
    print(f"7. read back from the image: {len(found)} code(s), "
          f"identical to the issued one: {found == [code.code_text]}")
    if found != [code.code_text]:
        return 1
    result = hc.check(found[0], env.keyring(), now=dt.datetime.now(dt.timezone.utc))
    if not result.valid:
        print(f"8. verified offline: INVALID ({result.reason.value}: {result.detail})")
        return 1
    verified = result.code
    print(f"8. verified offline: VALID - province {verified.province}, serial {verified.serial}, "
          f"expires {verified.expires_at:%Y-%m-%d %H:%M}Z; the QR carries no ID number "
          f"({number not in found[0]}) and no name")
    return 0 if exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
