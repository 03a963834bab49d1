"""Contracts of every NATS subject: address, payload JSON Schema, producers, consumers, example.

The schemas are generated from the record classes in common.records; ``validate_payload``
checks a concrete message against its subject's contract with jsonschema, and
``python -m common.contracts.asyncapi --out docs/asyncapi.yaml`` writes the AsyncAPI 3.0
document from the same entries.
"""

from common.contracts._registry import (
    OPERATOR,
    STATE_RELAY,
    Contract,
    contract_for,
    contracts,
    validate_payload,
)
from common.contracts._schema import record_schema, strict_validator

__all__ = [
    "OPERATOR",
    "STATE_RELAY",
    "Contract",
    "contract_for",
    "contracts",
    "record_schema",
    "strict_validator",
    "validate_payload",
]
