"""A certificate authority, a SuperLink server certificate, and SuperNode authentication keys.

    fedcl certs --out certificates --hosts superlink.example.org,10.0.0.5 --nodes 3

writes ``ca.crt``/``ca.key`` (keep the CA key offline), ``server.pem``/``server.key`` (for
``flower-superlink --ssl-*``), and per SuperNode ``node-<i>.key`` (private, stays on the device)
and ``node-<i>.pub`` (OpenSSH format, registered with ``flwr supernode register``).
All keys are NIST P-384 elliptic-curve keys, as Flower's SuperNode authentication requires.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedcl.errors import ConfigError
from fedcl.outputs import prepare_out_dir


@dataclass
class Certificates:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    node_keys: list[tuple[Path, Path]]  # (private key, OpenSSH public key) per SuperNode


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)
    return path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


#: longest validity accepted (ten years); certificates meant to last longer should be renewed instead
MAX_DAYS = 3650
MAX_NODES = 10_000
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def check_host(host: str) -> str:
    """``host`` if it is an IP address or a valid DNS name (RFC 1123), else one clear error."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host.removesuffix(".")
    if len(name) > 253 or not name or not all(_DNS_LABEL.match(label) for label in name.split(".")) or name.split(".")[-1].isdigit():
        raise ConfigError(f"--hosts: {host[:80]!r} is neither an IP address nor a valid DNS host name")
    return name


def check_request(hosts: list[str], nodes: int, days: int) -> list[str]:
    """The checked host names; days and node counts in range (one clear error otherwise)."""
    if not hosts:
        raise ConfigError("--hosts must name at least one host or IP address the SuperNodes use to reach the SuperLink")
    if not 0 <= nodes <= MAX_NODES:
        raise ConfigError(f"--nodes must be between 0 and {MAX_NODES}, not {str(nodes)[:30]}")
    if not 1 <= days <= MAX_DAYS:
        raise ConfigError(f"--days must be between 1 and {MAX_DAYS} (ten years), not {str(days)[:30]}")
    return [check_host(h) for h in hosts]


def generate(out: str | Path, hosts: list[str], nodes: int, days: int = 365, overwrite: bool = False) -> Certificates:
    """Create the CA, a server certificate valid for ``hosts``, and ``nodes`` SuperNode key pairs."""
    hosts = check_request(hosts, nodes, days)
    out = Path(out)
    if (out / "ca.key").exists() and not overwrite:
        raise ConfigError(f"{out / 'ca.key'} exists; pass --overwrite to replace the certificate authority")
    prepare_out_dir(out)
    now = dt.datetime.now(dt.UTC)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedcl federation CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = _key()
    server_cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name).public_key(server_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(out / "ca.key", _pem_key(ca_key), private=True)
    ca_path = _write(out / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM))
    server_cert_path = _write(out / "server.pem", server_cert.public_bytes(serialization.Encoding.PEM))
    server_key_path = _write(out / "server.key", _pem_key(server_key), private=True)
    node_keys = [node_key_pair(out, f"node-{i}") for i in range(nodes)]
    return Certificates(ca_path, server_cert_path, server_key_path, node_keys)


def node_key_pair(out: str | Path, name: str) -> tuple[Path, Path]:
    """An EC key pair for SuperNode authentication: ``<name>.key`` (PEM) and ``<name>.pub`` (OpenSSH)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key = _key()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return _write(out / f"{name}.key", private, private=True), _write(out / f"{name}.pub", public + b"\n")
