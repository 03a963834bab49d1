"""infra/stack.py's decisions without real servers: secrets, stop order, process identities, RPC."""

from __future__ import annotations

import base64
import http.server
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.stackutil import stack


def _settings(tmp_path: Path) -> object:
    return stack.Settings.from_env({"RUN_DIR": str(tmp_path / "run")})


def test_secrets_are_generated_once_privately_and_reused(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    stack.make_run_dir(settings)
    first = stack.ensure_secrets(settings, env={})
    path = stack.secrets_path(settings)
    assert path.stat().st_mode & 0o777 == 0o600
    assert stack.api_token_path(settings).stat().st_mode & 0o777 == 0o600
    values = {name: first.values[name.lower()] for name in stack.SECRETS}
    assert len(set(values.values())) == len(values), "each secret is its own random value"
    assert len(values["JANUS_TOKEN_KEY"]) == 32, "the gateway needs exactly 32 bytes"
    assert all(len(v) >= 32 for v in values.values())
    assert stack.api_token_path(settings).read_text().strip() == values["API_TOKEN"]

    again = stack.ensure_secrets(settings, env={})
    assert {n: again.values[n.lower()] for n in stack.SECRETS} == values
    other = _settings(tmp_path / "other")
    stack.make_run_dir(other)
    other_run = stack.ensure_secrets(other, env={})
    assert other_run.values["api_token"] != values["API_TOKEN"]


def test_an_env_secret_seeds_a_missing_one_and_is_ignored_once_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _settings(tmp_path)
    stack.make_run_dir(settings)
    seeded = stack.ensure_secrets(settings, env={"HLS_KEY_SECRET": "mine-" + "x" * 40})
    assert seeded.values["hls_key_secret"] == "mine-" + "x" * 40
    later = stack.ensure_secrets(settings, env={"HLS_KEY_SECRET": "another"})
    assert later.values["hls_key_secret"] == "mine-" + "x" * 40
    assert "HLS_KEY_SECRET from the environment is ignored" in capsys.readouterr().out


def test_a_secret_added_later_is_generated_and_the_others_kept(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    stack.make_run_dir(settings)
    path = stack.secrets_path(settings)
    path.write_text("# older stack\nAPI_TOKEN=kept-token-0123456789\n")
    loaded = stack.ensure_secrets(settings, env={})
    assert loaded.values["api_token"] == "kept-token-0123456789"
    assert loaded.values["jwt_secret"]
    assert path.stat().st_mode & 0o777 == 0o600
    assert "API_TOKEN=kept-token-0123456789\n" in path.read_text()


def test_the_run_dir_is_private(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    stack.make_run_dir(settings)
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o700


def test_stop_tiers_reverse_the_start_order() -> None:
    tiers = stack.stop_tiers(stack.COMPONENTS)
    flat = [n for tier in tiers for n in tier]
    assert sorted(flat) == sorted(c.name for c in stack.COMPONENTS)
    assert tiers[0] == ["svc_rooms"], "svc_rooms first: it must not see the modules' heartbeats go"
    assert set(tiers[-1]) == {"nats", "etcd", "redis"}, "the servers every service uses go last"
    assert flat.index("svc_janus") < flat.index("janus")
    order = {c.name: c.order for c in stack.COMPONENTS}
    assert [order[t[0]] for t in tiers] == sorted({c.order for c in stack.COMPONENTS}, reverse=True)


def test_process_identity_of_a_running_process_and_of_none() -> None:
    me = stack.ProcessIdentity.of(os.getpid())
    assert me is not None and me.is_running()
    assert stack.ProcessIdentity.from_json(me.to_json()) == me
    assert stack.ProcessIdentity.from_json(1234) is None
    assert stack.ProcessIdentity.from_json({"pid": 1}) is None
    proc = subprocess.Popen(["sleep", "30"])
    ident = stack.ProcessIdentity.of(proc.pid)
    proc.kill()
    proc.wait()
    assert ident is not None and not ident.is_running()
    assert stack.ProcessIdentity.of(proc.pid) is None


def test_rpc_to_a_silent_supervisord_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(tmp_path)
    stack.make_run_dir(settings)
    monkeypatch.setattr(stack, "RPC_TIMEOUT_S", 0.3)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(str(stack.socket_path(settings)))
        silent.listen()  # connects, never answers
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            stack.rpc(settings, "getPID")
        assert time.monotonic() - started < 5
    assert socket.getdefaulttimeout() is None, "the default socket timeout is restored"


def test_rpc_over_the_loopback_port_sends_the_password(tmp_path: Path) -> None:
    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers["Authorization"])
            body = b"<?xml version='1.0'?><methodResponse><params><param><value><int>4242</int>"
            body += b"</value></param></params></methodResponse>"
            self.send_response(200)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with http.server.HTTPServer(("127.0.0.1", 0), Handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            run = tmp_path / "run"
            settings = stack.Settings.from_env(
                {"RUN_DIR": str(run), "SUPERVISOR_PORT": str(server.server_port)}
            )
            stack.make_run_dir(settings)
            (run / "supervisor.secret").write_text("stack s3cret\n")
            assert stack.supervisord_pid(settings) == 4242
        finally:
            server.shutdown()
            thread.join(5)
    assert seen == ["Basic " + base64.b64encode(b"stack:s3cret").decode()]


def test_unstable_is_pinned_to_janus_and_its_library_only() -> None:
    pin = stack.unstable_pin_text()
    stanzas = [s for s in pin.split("\n\n") if "Package:" in s]
    assert "Package: *" in stanzas[0] and "Pin-Priority: -1" in stanzas[0]
    assert "Package: janus libconfig15" in stanzas[1] and "Pin-Priority: 500" in stanzas[1]
    assert all("Pin: release a=unstable" in s for s in stanzas)
    assert stack.unstable_source_text("http://m/debian") == (
        "deb [check-valid-until=no] http://m/debian unstable main\n"
    )


def test_debian_mirror_comes_from_the_existing_sources(tmp_path: Path) -> None:
    deb822 = tmp_path / "debian.sources"
    deb822.write_text(
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: trixie trixie-updates\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: trixie-security\n"
    )
    legacy = tmp_path / "sources.list"
    legacy.write_text("deb http://other.example/debian trixie main\n")
    assert stack.debian_mirror([tmp_path / "missing", deb822, legacy]) == "http://mirror.example/debian"
    assert stack.debian_mirror([legacy]) == "http://other.example/debian"
    assert stack.debian_mirror([tmp_path / "missing"]) == stack.DEFAULT_DEBIAN_MIRROR
