# tests/certs.py -- a test CA and the certificates it issues, as PEM files.
#
# Strategy: trustme makes a throwaway CA in memory; its certificate, the
# issued chain and key are written where a test's balancer can read them,
# and a client context trusts the CA, so TLS is checked for real without
# touching the system's trust store.
from __future__ import annotations

import ssl
from pathlib import Path

import trustme


class Certs:
    """A test CA and the PEM files of a certificate it issued for 127.0.0.1
    and localhost (``both``: key and chain in one file)."""

    def __init__(self, folder: Path, names: tuple[str, ...] = ("127.0.0.1", "localhost")) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.issued = self.ca.issue_cert(*names)
        self.cert, self.key = folder / "cert.pem", folder / "key.pem"
        self.both, self.ca_file = folder / "both.pem", folder / "ca.pem"
        self.issued.cert_chain_pems[0].write_to_path(str(self.cert))
        self.issued.private_key_pem.write_to_path(str(self.key))
        self.issued.private_key_and_cert_chain_pem.write_to_path(str(self.both))
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def listen_args(self) -> tuple[str, ...]:
        return ("--certfile", str(self.cert), "--keyfile", str(self.key))

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        context.set_alpn_protocols(["http/1.1"])
        return context
