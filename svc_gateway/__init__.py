"""svc_gateway: see README.md and docs/architecture.md, Services."""

from common import keys

# The core NATS subjects svc_gateway subscribes to (Bus.subscribe) or answers (Bus.respond): the
# room events of every room (fanned out to its local connections) and the user commands of this
# process. tests/unit/common/test_contract_consumers.py derives the contract consumers from it.
SUBSCRIPTIONS: tuple[str, ...] = (
    keys.event_filter("rooms", "members"),
    keys.event_filter("rooms", "migrated"),
    keys.event_filter("rooms", "janus_restarted"),
    keys.GATEWAY_USERS_FILTER,
)
