"""The registry's consumers are the services that really subscribe to each subject.

The truth is derived from the code: a service's subscriptions are the filter subjects of the
``Interest``s its reconcile runtime is built with (``svc_<name>.reconcile.INTERESTS``, checked
against the ``interests=`` argument its ``app.py`` gives ``ReconcileRuntime``), plus the core
NATS subjects it subscribes to or answers (``Bus.subscribe`` / ``Bus.respond``), declared as
``SUBSCRIPTIONS`` (filter subjects) in ``svc_<name>/reconcile.py`` or ``svc_<name>/__init__.py``.
A service that calls ``subscribe``/``respond`` must declare them, and no service module
subscribes to NATS any other way; the service's integration tests compare ``Bus.subscriptions``
of the running service with its declaration. A service is a consumer of a contract iff one of
its filter subjects matches the contract's subjects (NATS wildcards).
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from common.contracts import OPERATOR, Contract, contracts
from common.keys import Collection, Kind
from common.reconcile import Interest

ROOT = Path(__file__).resolve().parents[3]
SERVICE_DIRS = sorted(p for p in ROOT.glob("svc_*") if (p / "__init__.py").is_file())
SERVICES = [p.name for p in SERVICE_DIRS]

# Ways of subscribing to NATS other than through common.reconcile (serve_micro's request
# endpoints are not contract subjects).
_DIRECT_SUBSCRIBE = {"subscribe", "pull_subscribe", "pull_subscribe_bind", "add_consumer", "PullStream"}
# Core NATS subscriptions through common.bus: allowed for subjects declared in SUBSCRIPTIONS.
_DECLARED_SUBSCRIBE = {"subscribe", "respond"}


def nats_match(filter_subject: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` is one or more tokens."""
    want = filter_subject.split(".")
    got = subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return i == len(want) - 1 and len(got) > i
        if i >= len(got) or (token != "*" and token != got[i]):
            return False
    return len(want) == len(got)


def _interests(service: str) -> tuple[Interest, ...]:
    """``svc_<name>.reconcile.INTERESTS``, or () for a service without a reconcile runtime."""
    if not (ROOT / service / "reconcile.py").is_file():
        return ()
    module = importlib.import_module(f"{service}.reconcile")
    interests: tuple[Interest, ...] = getattr(module, "INTERESTS", ())
    return interests


def _runtime_interests_in_app(service: str) -> list[Interest] | None:
    """The ``interests=`` ``app.py`` passes to ``ReconcileRuntime``, evaluated; None if no runtime."""
    app = ROOT / service / "app.py"
    if not app.is_file():
        return None
    source = app.read_text()
    found: list[Interest] | None = None
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name != "ReconcileRuntime":
            continue
        assert found is None, f"{service}/app.py builds more than one ReconcileRuntime"
        arg = next((k.value for k in node.keywords if k.arg == "interests"), None)
        assert arg is not None, f"{service}/app.py: ReconcileRuntime without interests="
        segment = ast.get_source_segment(source, arg)
        assert segment is not None
        namespace: dict[str, Any] = {
            "Interest": Interest,
            "Collection": Collection,
            "Kind": Kind,
            "INTERESTS": _interests(service),
        }
        found = list(eval(segment, namespace))  # a literal of Interests or INTERESTS itself
    return found


def _declared(service: str) -> tuple[str, ...]:
    """``SUBSCRIPTIONS`` of ``svc_<name>/reconcile.py`` or ``svc_<name>/__init__.py`` (one place)."""
    found: list[tuple[str, ...]] = []
    for module_name in (f"{service}.reconcile", service):
        if module_name.endswith(".reconcile") and not (ROOT / service / "reconcile.py").is_file():
            continue
        value = getattr(importlib.import_module(module_name), "SUBSCRIPTIONS", None)
        if value is not None:
            found.append(tuple(value))
    assert len(found) <= 1, f"{service} declares SUBSCRIPTIONS twice"
    return found[0] if found else ()


def _subscriptions(service: str) -> list[str]:
    return [s for i in _interests(service) for s in i.filter_subjects()] + list(_declared(service))


def _sample_subject(contract: Contract) -> str:
    return contract.subject(**{p.name: "x-123" for p in contract.parameters})


def _true_consumers(contract: Contract) -> set[str]:
    subject = _sample_subject(contract)
    return {svc for svc in SERVICES if any(nats_match(f, subject) for f in _subscriptions(svc))}


def _calls(paths: Iterable[Path], names: set[str]) -> list[str]:
    hits = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in names:
                    hits.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}()")
    return hits


def test_every_service_is_known() -> None:
    assert set(SERVICES) == {"svc_rooms", "svc_janus", "svc_mixer", "svc_gateway", "svc_users"}


@pytest.mark.parametrize("service", SERVICES)
def test_app_builds_its_runtime_with_the_declared_interests(service: str) -> None:
    declared = _interests(service)
    in_app = _runtime_interests_in_app(service)
    if in_app is None:
        assert declared == (), f"{service} declares INTERESTS but builds no ReconcileRuntime"
    else:
        assert declared, f"{service}/app.py builds a ReconcileRuntime: declare reconcile.INTERESTS"
        assert set(in_app) == set(declared), f"{service}/app.py watches other subjects than INTERESTS"


@pytest.mark.parametrize("service_dir", SERVICE_DIRS, ids=lambda p: p.name)
def test_no_service_subscribes_around_its_declarations(service_dir: Path) -> None:
    paths = list(service_dir.rglob("*.py"))
    raw = _calls(paths, _DIRECT_SUBSCRIBE - _DECLARED_SUBSCRIBE)
    assert raw == [], "a raw NATS subscription: use the reconcile runtime or Bus.subscribe/respond"
    # only Bus.subscribe/respond remain; a service using them declares what it subscribes to
    if _calls(paths, _DECLARED_SUBSCRIBE):
        assert _declared(service_dir.name), f"{service_dir.name} subscribes: declare SUBSCRIPTIONS"


@pytest.mark.parametrize("contract", contracts(), ids=lambda c: c.name)
def test_registry_consumers_are_the_subscribers(contract: Contract) -> None:
    listed = set(contract.consumers)
    assert listed - set(SERVICES) <= {OPERATOR}, contract.name
    assert listed & set(SERVICES) == _true_consumers(contract), contract.address


def test_users_and_gateway_consume_their_subjects() -> None:
    by_address = {c.address: c for c in contracts()}
    assert by_address["rtc.state.rooms.{roomId}.meta"].consumers.count("svc_users") == 1
    assert by_address["rtc.users.status"].consumers == ("svc_users",)
    for address in (
        "rtc.events.rooms.{roomId}.members",
        "rtc.events.rooms.{roomId}.migrated",
        "rtc.events.rooms.{roomId}.janus_restarted",
        "rtc.gateway.{serverId}.users",
    ):
        assert by_address[address].consumers == ("svc_gateway",), address


def test_rooms_janus_has_its_real_readers() -> None:
    by_address = {c.address: c for c in contracts()}
    consumers = set(by_address["rtc.state.rooms.{roomId}.janus"].consumers)
    assert {"svc_janus", "svc_mixer"} <= consumers


@pytest.mark.parametrize(
    ("filter_subject", "subject", "matches"),
    [
        ("rtc.state.rooms.*.janus", "rtc.state.rooms.r1x.janus", True),
        ("rtc.state.rooms.*.janus", "rtc.state.rooms.r1x.mixer", False),
        ("rtc.state.rooms.*.janus", "rtc.state.rooms.r1x.janus.x", False),
        ("rtc.state.mixers.>", "rtc.state.mixers.m1x.heartbeat", True),
        ("rtc.state.mixers.>", "rtc.state.mixers", False),
        ("rtc.events.>", "rtc.state.rooms.r1x.meta", False),
    ],
)
def test_nats_match(filter_subject: str, subject: str, matches: bool) -> None:
    assert nats_match(filter_subject, subject) is matches
