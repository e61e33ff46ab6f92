"""Certificates and keys of the cluster, made with openssl once per state folder."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

# The apiserver certificate must hold 127.0.0.1 (in-cluster clients reach it there: there is no kube-proxy)
# and the names of the `kubernetes` Service, as a real cluster's does.
APISERVER_NAMES = (
    "IP:127.0.0.1", "IP:10.0.0.1", "DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc", "DNS:kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class Pki:
    root: Path

    def cert(self, name: str) -> Path:
        return self.root / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.root / f"{name}.key"

    @property
    def service_account_public_key(self) -> Path:
        return self.root / "sa.pub"

    @property
    def service_account_private_key(self) -> Path:
        return self.root / "sa.key"


# name -> (subject, subjectAltName or None, extendedKeyUsage)
_LEAVES: dict[str, tuple[str, str | None, str]] = {
    "apiserver": ("/CN=kube-apiserver", ",".join(APISERVER_NAMES), "serverAuth"),
    "admin": ("/O=system:masters/CN=devcluster-admin", None, "clientAuth"),
    "apiserver-kubelet-client": ("/O=system:masters/CN=kube-apiserver-kubelet-client", None, "clientAuth"),
    "controller-manager": ("/CN=system:kube-controller-manager", None, "clientAuth"),
    "scheduler": ("/CN=system:kube-scheduler", None, "clientAuth"),
    "kubelet": ("/O=system:masters/CN=devcluster-kubelet", None, "clientAuth"),
    "kubelet-serving": ("/CN=devcluster", "IP:127.0.0.1,DNS:localhost,DNS:devcluster", "serverAuth"),
}


def ensure_pki(root: Path) -> Pki:
    """Creates the CA, the service-account key pair and every leaf certificate that is missing."""
    pki = Pki(root)
    root.mkdir(parents=True, exist_ok=True)
    if not pki.cert("ca").exists():
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=devcluster-ca",
                 "-keyout", str(pki.key("ca")), "-out", str(pki.cert("ca")),
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")
    if not pki.service_account_private_key.exists():
        _openssl("genrsa", "-out", str(pki.service_account_private_key), "2048")
        _openssl("rsa", "-in", str(pki.service_account_private_key), "-pubout",
                 "-out", str(pki.service_account_public_key))
    for name, (subject, alt_names, usage) in _LEAVES.items():
        if not pki.cert(name).exists():
            _issue(pki, name, subject, alt_names, usage)
    return pki


def _issue(pki: Pki, name: str, subject: str, alt_names: str | None, usage: str) -> None:
    csr = pki.root / f"{name}.csr"
    extensions = pki.root / f"{name}.ext"
    lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
             f"extendedKeyUsage={usage}"]
    if alt_names:
        lines.append(f"subjectAltName={alt_names}")
    extensions.write_text("\n".join(lines) + "\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", str(pki.key(name)), "-out", str(csr))
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(pki.cert("ca")), "-CAkey", str(pki.key("ca")),
             "-CAcreateserial", "-days", "3650", "-extfile", str(extensions), "-out", str(pki.cert(name)))
    csr.unlink()
    extensions.unlink()


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"devcluster: openssl {args[0]} failed: {result.stderr.strip()}")
