"""Network addresses, as the daemon and its client both read them (no compiled code, no grpc)."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether a host name or address is this machine's loopback (localhost, 127.0.0.0/8, ::1)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def target_host(address: str) -> str:
    """The host of a gRPC target: host:port, ipv4:host:port, ipv6:[h]:port, dns:///host:port."""
    target = address.split("///")[-1]
    for scheme in ("ipv4:", "ipv6:", "dns:"):
        target = target.removeprefix(scheme)
    return target.rsplit(":", 1)[0] if ":" in target else target
