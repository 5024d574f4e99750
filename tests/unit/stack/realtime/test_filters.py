"""postgres_changes filters: Supabase's grammar parsed, rows matched with SQL's three-valued logic."""

from __future__ import annotations

import operator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.realtime.filters import ColumnFilter, FilterError, Subscription, matches, parse_filter, parse_params

# -- parse -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("", ()),
        ("id=eq.7", (ColumnFilter("id", "eq", "7"),)),
        ("status=not.eq.done", (ColumnFilter("status", "eq", "done", negate=True),)),
        ("a=gt.1,b=lte.2", (ColumnFilter("a", "gt", "1"), ColumnFilter("b", "lte", "2"))),
        ('name=eq."a,b"', (ColumnFilter("name", "eq", "a,b"),)),
        ('name=eq."say \\"hi\\""', (ColumnFilter("name", "eq", 'say "hi"'),)),
        ('id=in.(1, 2,"3,4")', (ColumnFilter("id", "in", ("1", "2", "3,4")),)),
        ("id=not.in.()", (ColumnFilter("id", "in", (), negate=True),)),
        ("note=eq.a=b.c", (ColumnFilter("note", "eq", "a=b.c"),)),  # only the first '=' and '.' split
        ("x=is.null", (ColumnFilter("x", "is", "null"),)),
        ("t=ilike.%Zora%", (ColumnFilter("t", "ilike", "%Zora%"),)),
        ("  id=eq.1  ", (ColumnFilter("id", "eq", "1"),)),
    ],
)
def test_parse_filter(text: str, parsed: tuple[ColumnFilter, ...]) -> None:
    assert parse_filter(text) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id=eq.1,", "empty segments"),
        ("id=eq.1,,b=eq.2", "empty segments"),
        ("ideq.1", "Error parsing `filter` params: 'ideq.1'"),
        ("=eq.1", "Error parsing `filter` params"),
        ("id=zz.1", "unsupported operator"),
        ("id=eq", "unsupported operator"),
        ("id=not.zz.1", "unsupported operator"),
        ("id=in.1,2", "wrapped by parentheses"),
    ],
)
def test_parse_filter_errors(text: str, message: str) -> None:
    with pytest.raises(FilterError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        parse_filter(text)


FILTER_TEXT = st.text(alphabet=st.sampled_from(list('ab=.,()"\\ not.eqinlt%*_-1')), max_size=40) | st.text(max_size=40)


@given(FILTER_TEXT)
def test_parse_filter_raises_only_filter_error(text: str) -> None:
    try:
        parsed = parse_filter(text)
    except FilterError:
        return
    for f in parsed:
        assert f.column and f.op in {"eq", "neq", "lt", "lte", "gt", "gte", "in", "like", "ilike", "is", "match",
                                     "imatch", "isdistinct"}
        assert isinstance(f.value, tuple) == (f.op == "in")


SIMPLE = st.text(alphabet=st.characters(blacklist_characters='",()\\=', categories=["L", "N", "P", "S", "Zs"]), min_size=1,
                 max_size=12).map(str.strip).filter(bool)


@given(column=st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True), op=st.sampled_from(["eq", "neq", "lt", "gte",
       "like", "match"]), value=SIMPLE, negate=st.booleans())
def test_parse_filter_round_trip(column: str, op: str, value: str, negate: bool) -> None:
    text = f"{column}={'not.' if negate else ''}{op}.{value}"
    assert parse_filter(text) == (ColumnFilter(column, op, value, negate),)


@given(values=st.lists(st.text(alphabet=st.sampled_from(list('ab ,()."\\=')), max_size=8), max_size=5))
def test_parse_in_list_quoted_round_trip(values: list[str]) -> None:
    """Any value survives quoting in an ``in`` list: commas, parentheses, quotes and backslashes included."""
    body = ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    assert parse_filter(f"id=in.({body})") == (ColumnFilter("id", "in", tuple(values)),)


def test_parse_params_defaults_and_echo() -> None:
    assert parse_params({"table": "orders"}) == Subscription("*", "public", "orders")
    assert parse_params({"schema": "public"}) == Subscription("*", "public", "*")
    assert parse_params({"event": "insert", "schema": "s", "table": "t", "filter": "id=eq.1"}) == Subscription(
        "INSERT", "s", "t", (ColumnFilter("id", "eq", "1"),))
    assert parse_params({"event": "TRUNCATE", "schema": "s", "table": "t"}).event == "*"
    assert parse_params({"schema": "s", "table": "t", "select": ["id", 3, "note"]}).select == ("id", "note")
    assert parse_params({"schema": "s", "table": "t", "select": []}).select is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (None, "No subscription params"),
        ([], "No subscription params"),
        ({}, "No subscription params"),
        ({"schema": 1, "table": "t"}, "No subscription params"),
        ({"schema": "s", "table": "t", "filter": 3}, "No subscription params"),
        ({"schema": "s", "filter": "id=eq.1"}, "No subscription params"),  # a filter needs a table
        ({"schema": "s", "table": "t", "select": "id,note"}, "Error parsing `select` params"),
        ({"schema": "s", "table": "*", "select": ["id"]}, "Column selection is not supported for wildcard"),
        ({"schema": "s", "table": "t", "filter": "id=eq.1,"}, "empty segments"),
    ],
)
def test_parse_params_errors(params: Any, message: str) -> None:
    with pytest.raises(FilterError, match=message.replace("`", ".")):
        parse_params(params)


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                   max_size=3), max_leaves=8)
PARAMS = st.dictionaries(st.sampled_from(["event", "schema", "table", "filter", "select"]),
                         JSONISH | FILTER_TEXT, max_size=5) | JSONISH


@given(PARAMS)
def test_parse_params_raises_only_filter_error(params: Any) -> None:
    try:
        sub = parse_params(params)
    except FilterError:
        return
    assert sub.event in ("*", "INSERT", "UPDATE", "DELETE") and isinstance(sub.schema, str) and isinstance(sub.table, str)


# -- match -----------------------------------------------------------------------------------------

CMP = {"eq": operator.eq, "neq": operator.ne, "lt": operator.lt, "lte": operator.le, "gt": operator.gt,
       "gte": operator.ge}


@given(row=st.integers(-10**12, 10**12), target=st.integers(-10**12, 10**12), op=st.sampled_from(sorted(CMP)),
       pgtype=st.sampled_from(["int4", "bigint", "smallint", "numeric(12,2)", "double precision"]),
       negate=st.booleans())
def test_comparisons_agree_with_python_for_ints(row: int, target: int, op: str, pgtype: str, negate: bool) -> None:
    f = ColumnFilter("n", op, str(target), negate)
    assert matches((f,), {"n": row}, {"n": pgtype}) is (CMP[op](row, target) != negate)


@given(row=st.integers(-50, 50), values=st.lists(st.integers(-50, 50), max_size=6), negate=st.booleans())
def test_in_agrees_with_python_membership(row: int, values: list[int], negate: bool) -> None:
    f = ColumnFilter("n", "in", tuple(str(v) for v in values), negate)
    assert matches((f,), {"n": row}, {"n": "int8"}) is ((row in values) != negate)


@given(op=st.sampled_from([*sorted(CMP), "in", "like", "ilike", "match"]), negate=st.booleans())
def test_null_never_matches_a_comparison_negated_or_not(op: str, negate: bool) -> None:
    value: str | tuple[str, ...] = ("1",) if op == "in" else "1"
    assert not matches((ColumnFilter("n", op, value, negate),), {"n": None}, {"n": "int4"})


ALL_OPS = [*sorted(CMP), "in", "like", "ilike", "match", "imatch", "is", "isdistinct"]
PG_TYPES = ["int4", "numeric", "text", "uuid", "boolean", "timestamp with time zone", "date", "jsonb", "weird"]


@given(row=JSONISH | st.floats() | st.decimals(), op=st.sampled_from(ALL_OPS), value=FILTER_TEXT,
       pgtype=st.sampled_from(PG_TYPES), negate=st.booleans())
def test_matching_never_raises(row: Any, op: str, value: str, pgtype: str, negate: bool) -> None:
    f = ColumnFilter("c", op, tuple(value.split(",")) if op == "in" else value, negate)
    assert matches((f,), {"c": row}, {"c": pgtype}) in (True, False)


@pytest.mark.parametrize(
    ("flt", "row", "pgtype", "expected"),
    [
        ("price=eq.2.5", Decimal("2.50"), "numeric(10,2)", True),  # numeric compares by value, not text
        ("price=gt.10", Decimal("9.99"), "numeric", False),
        ("kind=eq.a", "a", "text", True),
        ("kind=lt.b", "a", "text", True),  # text compares as text
        ("kind=neq.a", "b", "text", True),
        ("id=eq.6F9619FF-8B86-D011-B42D-00C04FC964FF", "6f9619ff-8b86-d011-b42d-00c04fc964ff", "uuid", True),
        ("at=gt.2026-11-24T21:00:00Z", "2026-11-24 21:46:05.009807+00", "timestamp with time zone", True),
        ("at=lt.2026-11-24 22:00:00+01", "2026-11-24 21:46:05+00", "timestamp with time zone", False),
        ("day=gte.2026-01-01", "2026-03-01", "date", True),
        ("on=eq.true", True, "boolean", True),
        ("on=eq.f", True, "boolean", False),
        ("on=eq.maybe", True, "boolean", False),  # not a boolean: no match
        ("on=is.true", True, "boolean", True),
        ("on=is.false", None, "boolean", False),
        ("note=is.null", None, "text", True),
        ("note=not.is.null", None, "text", False),
        ("note=isdistinct.null", None, "text", False),
        ("note=isdistinct.x", None, "text", True),
        ("note=isdistinct.x", "x", "text", False),
        ("note=like.Zo%", "Zora", "text", True),
        ("note=like.zo%", "Zora", "text", False),
        ("note=ilike.zo%", "Zora", "text", True),
        ("note=like.Z_ra", "Zora", "text", True),
        ("note=like.100\\%", "100%", "text", True),
        ("note=like.100\\%", "1000", "text", False),
        ("note=match.^Zo", "Zora", "text", True),
        ("note=imatch.^zo", "Zora", "text", True),
        ("note=match.(", "Zora", "text", False),  # a bad regex matches nothing
        ("n=eq.abc", 1, "int4", False),  # not a number: no match
        ("n=in.(1,2)", 2, "int4", True),
        ("n=not.in.(1,2)", 3, "int4", True),
    ],
)
def test_matches_examples(flt: str, row: Any, pgtype: str, expected: bool) -> None:
    filters = parse_filter(flt)
    assert matches(filters, {filters[0].column: row}, {filters[0].column: pgtype}) is expected


def test_all_filters_must_hold_and_missing_columns_never_do() -> None:
    filters = parse_filter("a=eq.1,b=eq.2")
    types = {"a": "int4", "b": "int4"}
    assert matches(filters, {"a": 1, "b": 2}, types)
    assert not matches(filters, {"a": 1, "b": 3}, types)
    assert not matches(filters, {"a": 1}, types)
    assert matches((), {}, {})
    assert matches(parse_filter("a=eq.1"), {"a": 1}, {})  # an unknown type compares as text
