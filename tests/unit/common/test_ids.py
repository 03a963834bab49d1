"""Id validation: the gate in front of every etcd key segment and NATS subject token."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import InvalidInput
from common.ids import is_valid_id, validate_module_id, validate_room_id

# Characters that would break a NATS subject token or an etcd key segment.
_UNSAFE = set(". *>/\t\n\r\x00") | {"\u00a0", "\u2028"}


@pytest.mark.parametrize("value", ["abc", "r1_x", "room-1", "A" * 32, "mixer-1", "___", "0-0"])
def test_valid_ids_pass_unchanged(value: str) -> None:
    assert validate_room_id(value) == value
    assert validate_module_id(value) == value
    assert is_valid_id(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "ab",
        "A" * 33,
        "a.b.c",
        "ab*",
        "ab>",
        "a b",
        "abc\n",
        "\nabc",
        "a/bc",
        "a\tbc",
        "caf\u00e9",
        "abc\u00a0",
        "\uff41bc",  # fullwidth letter
        "a:bc",
    ],
)
def test_invalid_ids_raise_invalid_input_naming_the_field(value: str) -> None:
    with pytest.raises(InvalidInput) as err:
        validate_room_id(value)
    assert err.value.fields["field"] == "roomId"
    assert err.value.fields["value"] == value
    with pytest.raises(InvalidInput) as err:
        validate_module_id(value, field="janusId")
    assert err.value.fields["field"] == "janusId"
    assert not is_valid_id(value)


@pytest.mark.parametrize("value", [None, 123, b"abc", ["abc"]])
def test_non_strings_are_rejected(value: object) -> None:
    with pytest.raises(InvalidInput):
        validate_room_id(value)
    assert not is_valid_id(value)


def test_long_values_are_truncated_in_the_error() -> None:
    with pytest.raises(InvalidInput) as err:
        validate_room_id("x" * 10_000)
    assert len(err.value.fields["value"]) < 100


@given(st.text(max_size=40))
def test_anything_accepted_is_a_safe_subject_token_and_key_segment(value: str) -> None:
    try:
        accepted = validate_room_id(value)
    except InvalidInput:
        assert not is_valid_id(value)
        return
    assert accepted == value
    assert 3 <= len(value) <= 32
    assert value.isascii() and value.isprintable()
    assert not _UNSAFE & set(value)
    # One token, one segment: joining and splitting gives it back whole.
    assert f"rtc.state.rooms.{value}.meta".split(".")[3] == value
    assert f"/rooms/{value}/meta".split("/")[2] == value


@given(st.from_regex(r"[A-Za-z0-9_-]{3,32}", fullmatch=True))
def test_every_id_of_the_alphabet_is_accepted(value: str) -> None:
    assert validate_module_id(value) == value
