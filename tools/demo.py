"""The main job, end to end, on the embedded default (SQLite).

Sets up a throwaway province issuer (dev TLS PKI, signing key, vault key, API
key), starts the real gRPC issuer as a process, and drives it with a client:
registers a resident by their resident ID number, issues a health code (and
shows that a retry with the same idempotency key returns the same code),
renders the QR PNG through the API, reads the code back from the image, and
verifies it offline with the province's public key, as a hospital terminal
would. Then the resident's phone (the reference wallet, ``wallet/``) makes a
device key, enrols it with a proof of possession and receives a credential;
the phone's changing QR (a dynamic presentation) is read back from its PNG and
judged offline by the terminal's own scan path: VALID as a live code, the same
presentation scanned again is refused as replayed, one made two minutes ago as
stale, and the credential shown on its own (a screenshot of it) as needing the
live code. Then it stops the issuer gracefully. ``./dev demo`` runs this.
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
from healthcode.presentation import ReplayCache
from issuer.client import IssuerClient
from issuer.devenv import DevEnvironment, ServerProcess
from issuer.documents import DocumentType, make_resident_id, parse_document
from shellkit.times import beijing
from verifier.images import decode_image
from verifier.verdict import Judge
from wallet.core import Wallet
from wallet.display import presentation_png
from wallet.remote import WalletClient


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
        passphrase = secrets.token_hex(16)
        with WalletClient(server.address, ca_pem=env.ca_pem, api_key=env.api_key) as phone_link, \
                Wallet.create(work / "phone", "file", passphrase) as phone:
            credential = phone.enrol(phone_link, document, now=dt.datetime.now(dt.timezone.utc))
            print(f"6. the resident's phone made a P-256 device key, proved it holds it and got a credential "
                  f"bound to it (serial {credential.serial}), valid until {beijing(credential.expires_at)}")
            shown_at = dt.datetime.now(dt.timezone.utc)
            live_png = work / "live-code.png"
            live_png.write_bytes(presentation_png(phone.present(shown_at)))
            stale = phone.present(shown_at - dt.timedelta(minutes=2))
        exit_code = server.stop()
        print(f"7. issuer stopped gracefully (exit code {exit_code}); everything below is offline")

    found = decode_image(png)
    print(f"8. read back from the image: {len(found)} code(s), "
          f"identical to the issued one: {found == [code.code_text]}")
    if found != [code.code_text]:
        return 1
    result = hc.check(found[0], env.keyring(), now=dt.datetime.now(dt.timezone.utc))
    verified = result.code
    if verified is None:  # not valid: then check gave the reason
        reason = "?" if result.reason is None else result.reason.value
        print(f"9. verified offline: INVALID ({reason}: {result.detail})")
        return 1
    print(f"9. verified offline: VALID - province {verified.province}, serial {verified.serial}, "
          f"expires {beijing(verified.expires_at)}; the QR carries no ID number "
          f"({number not in found[0]}) and no name")
    return _live_code(env, live_png, stale, credential.text, number) if exit_code == 0 else 1


def _live_code(env: DevEnvironment, live_png: pathlib.Path, stale: str, credential: str, number: str) -> int:
    """The terminal's judgement of the phone's live code, offline: accepted once, then refused."""
    (live,) = decode_image(live_png)
    terminal = Judge(replay=ReplayCache())  # one per terminal process, as `run` keeps
    keyring, now = env.keyring(), dt.datetime.now(dt.timezone.utc)
    first = terminal(live, None, keyring, None, None, now)
    again = terminal(live, None, keyring, None, None, now)
    late = terminal(stale, None, keyring, None, None, now)
    alone = terminal(credential, None, keyring, None, None, now)
    ok = first.valid and [v.reason and v.reason.value for v in (again, late, alone)] == [
        "replayed", "stale_presentation", "presentation_required"]
    print(f"10. the phone's live code read back from {live_png.name} ({len(live)} characters, changes every 30 s; "
          f"no ID number in it: {number not in live}): "
          f"{'VALID as a live code' if first.valid else f'INVALID ({first.reason})'}")
    print(f"11. the same live code scanned again: {again.reason}; one made 2 minutes ago: {late.reason}; "
          f"the credential shown on its own (a screenshot of it): {alone.reason}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
