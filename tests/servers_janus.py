"""A real Janus Gateway for tests, configured from the infra/janus templates.

``JanusServer(run_dir)`` picks free loopback ports (HTTP, WebSocket, both Admin APIs and two
UDP ranges), renders ``infra/janus/*.jcfg`` into its own config dir and runs ``janus`` there;
ready when the HTTP ``info`` request answers. start/stop/kill/restart keep the ports, so a
restarted Janus is reachable at the same URLs (as after a crash in production).
``ice_enforce_list`` (an interface name, e.g. a test's veth) limits the ICE candidates Janus
gathers to that interface; start Janus after the interface exists.
"""

from __future__ import annotations

import json
import random
import socket
import string
import urllib.request
from pathlib import Path

from tests.servers import LOOPBACK, ServerProcess, find_binary, free_port

__all__ = ["JANUS_TEMPLATES", "JanusServer", "free_udp_range"]

JANUS_TEMPLATES = Path(__file__).resolve().parent.parent / "infra" / "janus"
TEST_ADMIN_KEY = "test-admin-key"
TEST_ADMIN_SECRET = "test-admin-secret"

# UDP ranges handed out to Janus instances of this process; a random base keeps concurrent
# pytest processes (several helpers share the machine) apart, a bind probe checks each range.
_UDP_SPAN = 200
_UDP_FIRST = 30000
_UDP_LAST = 60000
_udp_cursor = [random.randrange(_UDP_FIRST, _UDP_LAST - _UDP_SPAN, _UDP_SPAN)]


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_udp_range(span: int = _UDP_SPAN) -> tuple[int, int]:
    """A UDP port range (first, last) on loopback whose ends are free now."""
    for _ in range(50):
        base = _udp_cursor[0]
        _udp_cursor[0] = base + span if base + 2 * span < _UDP_LAST else _UDP_FIRST
        if _udp_free(base) and _udp_free(base + span - 1):
            return base, base + span - 1
    raise RuntimeError("no free UDP range for Janus")


class JanusServer(ServerProcess):
    """Janus on free loopback ports with its own config dir rendered from infra/janus."""

    name = "janus"

    def __init__(self, run_dir: Path, *, session_timeout_s: int = 60, ice_enforce_list: str = "") -> None:
        super().__init__(run_dir)
        self.http_port = free_port()
        self.ws_port = free_port()
        self.admin_http_port = free_port()
        self.admin_ws_port = free_port()
        self.rtp_range = free_udp_range()
        self.ab_rtp_range = free_udp_range()
        self.admin_key = TEST_ADMIN_KEY
        self.admin_secret = TEST_ADMIN_SECRET
        self.session_timeout_s = session_timeout_s
        self.ice_enforce_list = ice_enforce_list
        self.config_dir = self.run_dir / "conf"
        self.render()

    def template_values(self) -> dict[str, str]:
        return {
            "janus_http_port": str(self.http_port),
            "janus_ws_port": str(self.ws_port),
            "janus_admin_http_port": str(self.admin_http_port),
            "janus_admin_ws_port": str(self.admin_ws_port),
            "janus_admin_secret": self.admin_secret,
            "janus_admin_key": self.admin_key,
            "janus_session_timeout_s": str(self.session_timeout_s),
            "janus_ice_enforce_list": self.ice_enforce_list,
            "janus_rtp_port_range": f"{self.rtp_range[0]}-{self.rtp_range[1]}",
            "janus_ab_rtp_port_range": f"{self.ab_rtp_range[0]}-{self.ab_rtp_range[1]}",
        }

    def render(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        values = self.template_values()
        for template in sorted(JANUS_TEMPLATES.glob("*.jcfg")):
            text = string.Template(template.read_text()).substitute(values)
            (self.config_dir / template.name).write_text(text)

    @property
    def ws_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.ws_port}"

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}/janus"

    def argv(self) -> list[str]:
        return [
            find_binary("janus"),
            "-F",
            str(self.config_dir),
            "-C",
            str(self.config_dir / "janus.jcfg"),
            "--disable-colors",
        ]

    def info(self) -> dict[str, object]:
        body = json.dumps({"janus": "info", "transaction": "ready"}).encode()
        req = urllib.request.Request(self.http_url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=0.5) as r:
            reply: dict[str, object] = json.loads(r.read())
        return reply

    def is_ready(self) -> bool:
        if self.info().get("janus") != "server_info":
            return False
        # The WebSocket transport starts after the HTTP one: wait for it too.
        with socket.create_connection((LOOPBACK, self.ws_port), timeout=0.5):
            return True
