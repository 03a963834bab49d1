"""Generate the AsyncAPI 3.0 document of every NATS subject from the contracts registry.

``python -m common.contracts.asyncapi --out docs/asyncapi.yaml`` (``just asyncapi``) writes it;
without ``--out`` it prints to stdout. The output is deterministic (fixed examples, registry
order, no timestamps) so tests/contract/test_asyncapi_current.py can demand that the committed
file equals a fresh build.

Layout: one channel per contract (address with ``{parameters}``), one message per channel in
``components.messages`` (payload schema, example, headers), a ``send`` operation per producer
and a ``receive`` operation per consumer. Payload schemas are JSON Schema without the
``$schema`` line: AsyncAPI's default schema format is a superset of draft 07 and the keywords
used here mean the same in draft 2020-12.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from common.contracts._registry import Contract, camel_case, contracts, pascal_case

__all__ = ["build_document", "main", "render"]

ASYNCAPI_VERSION = "3.0.0"
DOC_VERSION = "0.1.0"


def _payload(contract: Contract) -> dict[str, Any]:
    return {k: v for k, v in contract.schema.items() if k != "$schema"}


def _message(contract: Contract) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": contract.name,
        "title": contract.title,
        "summary": (
            f"{contract.payload_type.__name__} on {contract.address} (stream {contract.stream})"
            if contract.stream
            else f"{contract.payload_type.__name__} request on {contract.address} (core NATS)"
        ),
        "contentType": "application/json",
    }
    if contract.headers:
        message["headers"] = {
            "type": "object",
            "properties": {
                name: {"type": "string", "description": doc} for name, doc in sorted(contract.headers.items())
            },
            "required": sorted(contract.headers),
        }
    message["payload"] = _payload(contract)
    message["examples"] = [{"name": f"{contract.name}Example", "payload": dict(contract.example)}]
    return message


def _channel(contract: Contract) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "address": contract.address,
        "title": contract.title,
        "description": contract.description,
        "messages": {contract.name: {"$ref": f"#/components/messages/{contract.name}"}},
    }
    if contract.parameters:
        channel["parameters"] = {
            p.name: {"description": f"{p.description} Pattern {p.pattern}"} for p in contract.parameters
        }
    if contract.stream:
        channel["x-stream"] = contract.stream
    else:
        # request/reply on core NATS: AsyncAPI's operation reply needs a reply channel, which a
        # NATS inbox is not; the successful reply's schema is given here instead
        channel["x-request-reply"] = {"reply": dict(contract.reply or {})}
    return channel


def _operation(contract: Contract, service: str, action: str) -> dict[str, Any]:
    if contract.is_request:
        verb = "requests" if action == "send" else "answers"
    else:
        verb = "publishes" if action == "send" else "consumes"
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{contract.name}"},
        "summary": f"{service} {verb} {contract.title}",
        "messages": [{"$ref": f"#/channels/{contract.name}/messages/{contract.name}"}],
    }


def build_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document as plain data."""
    entries = contracts()
    operations: dict[str, Any] = {}
    for contract in entries:
        for service in contract.producers:
            operations[f"{camel_case(service)}Send{pascal_case(contract.name)}"] = _operation(
                contract, service, "send"
            )
        for service in contract.consumers:
            operations[f"{camel_case(service)}Receive{pascal_case(contract.name)}"] = _operation(
                contract, service, "receive"
            )
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "audio-rtc messaging",
            "version": DOC_VERSION,
            "description": (
                "Every NATS subject of audio-rtc, generated from common/contracts "
                "(`python -m common.contracts.asyncapi --out docs/asyncapi.yaml`; do not edit by hand). "
                "rtc.state.* (stream RTC_STATE) mirrors every etcd change; rtc.events.* (RTC_EVENTS) "
                "carries domain events; rtc.dlq.* (RTC_DLQ) holds messages a service gave up on; "
                "rtc.users.status and rtc.gateway.*.users are core NATS request/reply (x-request-reply "
                "gives the reply's schema)."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "The NATS JetStream server of a local `just up` stack.",
            }
        },
        "channels": {c.name: _channel(c) for c in entries},
        "operations": operations,
        "components": {"messages": {c.name: _message(c) for c in entries}},
    }


def render() -> str:
    """The document as YAML text (stable: insertion order, no anchors, fixed width)."""

    class _NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    text: str = yaml.dump(
        build_document(),
        Dumper=_NoAliases,
        sort_keys=False,
        allow_unicode=True,
        width=100,
        default_flow_style=False,
    )
    return "# Generated by `python -m common.contracts.asyncapi`; do not edit.\n" + text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m common.contracts.asyncapi", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    text = render()
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
