"""The compose interpolation the production-shaped run relies on (tests/support/compose.py), against the
Compose specification's rules, over generated names and values."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.compose import ComposeService, InterpolationError, interpolate

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
# Values without '$' or '}' (they would be syntax of their own); may be empty.
values = st.text(st.characters(blacklist_characters="$}", codec="utf-8"), max_size=20)


@given(names, values, values)
def test_default_with_colon_replaces_unset_and_empty(name: str, value: str, default: str) -> None:
    assert interpolate(f"${{{name}:-{default}}}", {}) == default
    assert interpolate(f"${{{name}:-{default}}}", {name: ""}) == default
    expected = value if value else default
    assert interpolate(f"${{{name}:-{default}}}", {name: value}) == expected


@given(names, values, values)
def test_default_without_colon_replaces_only_unset(name: str, value: str, default: str) -> None:
    assert interpolate(f"${{{name}-{default}}}", {}) == default
    assert interpolate(f"${{{name}-{default}}}", {name: value}) == value


@given(names, values, values)
def test_alternative_is_given_only_when_set(name: str, value: str, alternative: str) -> None:
    assert interpolate(f"${{{name}:+{alternative}}}", {name: value}) == (alternative if value else "")
    assert interpolate(f"${{{name}+{alternative}}}", {name: value}) == alternative
    assert interpolate(f"${{{name}+{alternative}}}", {}) == ""


@given(names, values)
def test_required_refuses_unset_and_empty_with_its_message(name: str, message: str) -> None:
    for dotenv in ({}, {name: ""}):
        with pytest.raises(InterpolationError, match="is required"):
            interpolate(f"${{{name}:?{message}}}", dotenv)
    assert interpolate(f"${{{name}?{message}}}", {name: ""}) == ""


@given(names, values, values)
def test_plain_and_braced_variables_and_the_dollar_escape(name: str, value: str, text: str) -> None:
    assert interpolate(f"{text}${{{name}}}{text}", {name: value}) == f"{text}{value}{text}"
    assert interpolate(f"${name}", {name: value}) == value
    assert interpolate(f"$${{{name}}}", {name: value}) == f"${{{name}}}"
    assert interpolate(f"${{{name}}}", {}) == ""


@pytest.mark.parametrize("bad", ["$", "cost: 5$", "${1X}", "${X", "${}"])
def test_a_dollar_compose_cannot_read_is_refused(bad: str) -> None:
    with pytest.raises(InterpolationError):
        interpolate(bad, {"X": "x"})


def test_environment_list_mapping_and_the_operators_env_file() -> None:
    dotenv = {"TOKEN": "t0k", "PASS": "p"}
    listed = ComposeService("a", {"environment": ["A=${TOKEN}", "B=x$$y", "PASS"]})
    assert listed.environment(dotenv) == {"A": "t0k", "B": "x$y", "PASS": "p"}
    mapped = ComposeService("b", {"env_file": ".env", "environment": {"TOKEN": "${TOKEN:-none}-2", "N": 3}})
    assert mapped.environment(dotenv) == {"TOKEN": "t0k-2", "PASS": "p", "N": "3"}
    with pytest.raises(InterpolationError, match=r"not the operator's \.env"):
        ComposeService("c", {"env_file": ["other.env"]}).environment(dotenv)
