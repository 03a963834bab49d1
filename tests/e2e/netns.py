"""A client network namespace joined to the root namespace by a veth pair, for WebRTC tests.

Janus never gathers ICE candidates on loopback and aiortc's ICE skips 127.0.0.1, so a WebRTC
peer needs a non-loopback link. ``VethNamespace.create()`` makes one the test owns:

- a network namespace ``artc-<hex>`` (unique per run) for the WebRTC client, ``lo`` up;
- a veth pair: the server end ``ar<hex>s`` stays in the root namespace with ``198.18.x.1/30``,
  the client end ``ar<hex>c`` moves into the namespace with ``198.18.x.2/30``. The /30 comes
  from the benchmarking range 198.18.0.0/15, one no route of this machine uses yet, so two runs
  never clash and no traffic ever goes to the machine's own external address.

Every service keeps listening on 127.0.0.1 of the root namespace; Janus runs there with
``ice_enforce_list`` = the server end, so it only offers the veth address. A client process
starts in the root namespace and moves itself into the client namespace with ``enter()``
(setns on one fd of ``/var/run/netns/<name>``): sockets created afterwards (aiortc's ICE) are
in the namespace, sockets created before (or with ``root_socket``) keep talking to 127.0.0.1.

setns(CLONE_NEWNET) changes the namespace of the calling thread only; threads started later
inherit it. So call ``enter()`` from the thread that runs the event loop, before any executor
thread exists that should live in the namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import random
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "NETNS_DIR",
    "VethNamespace",
    "can_admin_network",
    "enter",
    "root_socket",
    "setns",
]

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/var/run/netns")
BENCH_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
_CAP_NET_ADMIN = 12
# the namespace of the thread that first called enter(): root_socket() creates sockets there
_home_fd: list[int] = []


def can_admin_network() -> tuple[bool, str]:
    """(True, "") when this process may create namespaces and links; else (False, why not)."""
    if shutil.which("ip") is None:
        return False, "the `ip` tool (iproute2) is not installed"
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            if int(line.split()[1], 16) >> _CAP_NET_ADMIN & 1:
                return True, ""
            return False, "needs CAP_NET_ADMIN (run as root) to create a network namespace and a veth pair"
    return False, "cannot read the process capabilities"


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace open at ``fd`` (Python 3.11+)."""
    if hasattr(os, "setns"):  # Python >= 3.12
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def enter(name_or_path: str) -> None:
    """Move the calling thread into a named namespace (or a path such as /proc/PID/ns/net).

    The namespace the thread was in before is kept open, so ``root_socket`` can still make
    sockets there (a WebSocket to a service on 127.0.0.1 of the root namespace).
    """
    path = name_or_path if "/" in name_or_path else str(NETNS_DIR / name_or_path)
    if not _home_fd:
        _home_fd.append(os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC))
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _at_home() -> Iterator[None]:
    if not _home_fd:  # never entered a namespace: already home
        yield
        return
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(_home_fd[0])
        try:
            yield
        finally:
            setns(here)
    finally:
        os.close(here)


def root_socket(family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket of the namespace this process started in (it stays there after creation)."""
    with _at_home():
        return socket.socket(family, kind)


def _ip(*args: str, netns: str | None = None) -> str:
    """``ip ARGS``; in the namespace ``netns`` through ``nsenter --net`` (util-linux), which only
    switches the network namespace: ``ip -n`` also remounts ``/`` and ``/sys``, which fails in a
    chroot (the fresh-root checks) with "mount --make-rslave /" failed."""
    argv = ["ip", *args]
    if netns is not None:
        argv = ["nsenter", f"--net={NETNS_DIR / netns}", *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {out.stderr.strip()}")
    return out.stdout


def _used_networks() -> list[ipaddress.IPv4Network]:
    used = []
    for line in _ip("-4", "-o", "addr", "show").splitlines():
        fields = line.split()
        if "inet" in fields:
            used.append(ipaddress.ip_interface(fields[fields.index("inet") + 1]).network)
    for line in _ip("-4", "route", "show", "table", "all").splitlines():
        dest = line.split()[0] if line else ""
        with contextlib.suppress(ValueError):
            used.append(ipaddress.ip_network(dest, strict=False))
    return [n for n in used if isinstance(n, ipaddress.IPv4Network)]


def _free_slash30() -> ipaddress.IPv4Network:
    used = [n for n in _used_networks() if n.prefixlen > 0]  # the default route overlaps everything
    rng = random.Random()
    for _ in range(200):
        net = ipaddress.IPv4Network(f"{BENCH_RANGE[rng.randrange(0, BENCH_RANGE.num_addresses, 4)]}/30")
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free /30 in 198.18.0.0/15")


@dataclass(frozen=True)
class VethNamespace:
    """A client namespace and its veth pair; ``delete()`` removes both (idempotent)."""

    name: str
    server_if: str
    client_if: str
    server_ip: str
    client_ip: str

    @property
    def path(self) -> str:
        return str(NETNS_DIR / self.name)

    @classmethod
    def create(cls) -> VethNamespace:
        tag = f"{os.getpid() & 0xFFFF:04x}{random.getrandbits(16):04x}"
        net = _free_slash30()
        hosts = list(net.hosts())
        ns = cls(
            name=f"artc-{tag}",
            server_if=f"ar{tag}s",
            client_if=f"ar{tag}c",
            server_ip=str(hosts[0]),
            client_ip=str(hosts[1]),
        )
        try:
            _ip("netns", "add", ns.name)
            _ip("link", "add", ns.server_if, "type", "veth", "peer", "name", ns.client_if)
            _ip("link", "set", ns.client_if, "netns", ns.name)
            _ip("addr", "add", f"{ns.server_ip}/30", "dev", ns.server_if)
            _ip("link", "set", ns.server_if, "up")
            _ip("addr", "add", f"{ns.client_ip}/30", "dev", ns.client_if, netns=ns.name)
            _ip("link", "set", ns.client_if, "up", netns=ns.name)
            _ip("link", "set", "lo", "up", netns=ns.name)
        except BaseException:
            ns.delete()
            raise
        return ns

    def delete(self) -> None:
        # deleting one end of a veth removes its peer; the namespace goes with its last user
        for args in (("link", "del", self.server_if), ("netns", "del", self.name)):
            with contextlib.suppress(RuntimeError):
                _ip(*args)

    def exists(self) -> bool:
        return (NETNS_DIR / self.name).exists() or self.server_if in _ip("-o", "link", "show")
