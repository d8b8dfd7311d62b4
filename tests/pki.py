"""A throwaway certificate authority (trustme) for the TLS tests: a CA, a server certificate
for 127.0.0.1 and localhost, and a second CA that nothing is signed by."""

from __future__ import annotations

from pathlib import Path

import trustme


def make_pki(root: Path) -> dict[str, Path]:
    """PEM files under ``root``: ``ca``, ``chain`` (the server's), ``key`` and ``other_ca``."""
    root.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {
        "ca": root / "ca.pem",
        "chain": root / "chain.pem",
        "key": root / "key.pem",
        "other_ca": root / "other-ca.pem",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    for blob in cert.cert_chain_pems:
        blob.write_to_path(str(paths["chain"]), append=True)
    cert.private_key_pem.write_to_path(str(paths["key"]))
    trustme.CA().cert_pem.write_to_path(str(paths["other_ca"]))
    return paths
