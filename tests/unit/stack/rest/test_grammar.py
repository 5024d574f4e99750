"""PostgREST's URL grammar, parsed without a database: select trees, filters, logic trees, order, errors.

The HTTP fuzz (tests/stack/test_rest_bad_input.py) checks that any query gets a 2xx or a PostgREST-shaped 4xx;
here the same inputs go to the pure parsers, which must answer with plain data or a 400 PGRST100, nothing else,
and generated trees must parse back to what was rendered.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from stack.rest import RestAPI
from stack.rest.errors import RestError
from stack.rest.grammar import (
    MAX_NESTING,
    Embed,
    Field,
    Filter,
    Logic,
    Order,
    Star,
    parse_field,
    parse_filter,
    parse_logic,
    parse_order,
    parse_select,
    split_top,
)


def refused(call: Any, *args: Any) -> RestError:
    with pytest.raises(RestError) as e:
        call(*args)
    assert e.value.status == 400 and e.value.code == "PGRST100"
    return e.value


# -- select ----------------------------------------------------------------------------------------

def test_select_fields_embeds_and_defaults() -> None:
    assert parse_select("") == (Star(),) and parse_select("*") == (Star(),) and parse_select(" , ") == (Star(),)
    assert parse_select("id, total:amount::text, data->a->>b") == (
        Field("id"), Field("amount", cast="text", alias="total"), Field("data", (("->", "a"), ("->>", "b"))))
    assert parse_select("*, order_items(*, product:products(name))") == (
        Star(), Embed("order_items", None, None, False, (Star(), Embed("products", "product", None, False,
                                                                        (Field("name"),)))))
    assert parse_select("vendor:vendors!orders_vendor_id_fkey!inner(shop_name)") == (
        Embed("vendors", "vendor", "orders_vendor_id_fkey", True, (Field("shop_name"),)),)
    assert parse_select("items!left()") == (Embed("items", None, None, False, ()),)  # an empty embed: no key


def test_labels() -> None:
    assert Field("amount", alias="total").label == "total"
    assert Field("data", (("->", "a"), ("->>", "b"))).label == "b"
    assert Field("id").label == "id"
    assert Embed("vendors", "vendor", None, False, ()).label == "vendor"
    assert Embed("vendors", None, None, False, ()).label == "vendors"


@pytest.mark.parametrize(
    "text",
    ["id,(", "id)", "name::text;drop", "na;me", "a->", "a->b c;", '"unclosed', "x:(a)", "a!b;c(d)"],
)
def test_select_errors(text: str) -> None:
    refused(parse_select, text)


def test_nesting_is_bounded() -> None:
    deep = "a(" * MAX_NESTING + "b" + ")" * MAX_NESTING
    assert parse_select(deep)  # as deep as allowed
    too_deep = "a(" * (MAX_NESTING + 1) + "b" + ")" * (MAX_NESTING + 1)
    assert "nested deeper" in (refused(parse_select, too_deep).details or "")
    assert "nested deeper" in (refused(parse_select, "a(" * 3000 + ")" * 3000).details or "")
    logic = "(" + "or(" * 3000 + "a.eq.1" + ")" * 3001
    assert "nested deeper" in (refused(parse_logic, "or", logic).details or "")


# -- filters -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("key", "value", "parsed"),
    [
        ("price", "eq.2.50", Filter(Field("price"), "eq", "2.50")),
        ("name", "not.like.*zora*", Filter(Field("name"), "like", "*zora*", negate=True)),
        ("id", 'in.(1, 2,"3,4")', Filter(Field("id"), "in", ("1", "2", "3,4"))),
        ("id", "in.()", Filter(Field("id"), "in", ())),
        ("deleted_at", "is.null", Filter(Field("deleted_at"), "is", "null")),
        ("ok", "is.NOT_NULL", Filter(Field("ok"), "is", "NOT_NULL")),
        ("body", "fts(english).cat", Filter(Field("body"), "fts", "cat", language="english")),
        ("data->a->>b", "eq.x", Filter(Field("data", (("->", "a"), ("->>", "b"))), "eq", "x")),
        ("price::text", "like.2*", Filter(Field("price", cast="text"), "like", "2*")),
        ("name", 'eq."a,b"', Filter(Field("name"), "eq", "a,b")),
        ("name", 'eq."say \\"hi\\""', Filter(Field("name"), "eq", 'say "hi"')),
        ("name", 'in.("a\\\\b","c")', Filter(Field("name"), "in", ("a\\b", "c"))),
        ("name", "eq.", Filter(Field("name"), "eq", "")),
        ("note", "eq.line\nbreak", Filter(Field("note"), "eq", "line\nbreak")),
    ],
)
def test_parse_filter(key: str, value: str, parsed: Filter) -> None:
    assert parse_filter(key, value) == parsed


@pytest.mark.parametrize(
    ("key", "value"),
    [("price", "zz.1"), ("price", "eq"), ("price", "in.1,2"), ("x", "is.maybe"), ("x", "eq(english).a"),
     ("x", "EQ.1"), ("bad;name", "eq.1"), ("x", "not.zz.1"), ("x", "in.(1,(2)")],
)
def test_filter_errors(key: str, value: str) -> None:
    refused(parse_filter, key, value)


def test_logic_trees() -> None:
    assert parse_logic("or", "(a.eq.1,and(b.gt.2,c.is.null))") == Logic("or", (
        Filter(Field("a"), "eq", "1"),
        Logic("and", (Filter(Field("b"), "gt", "2"), Filter(Field("c"), "is", "null")))))
    assert parse_logic("not.and", "(a.not.eq.1,not.or(b.in.(1,2)))") == Logic("and", (
        Filter(Field("a"), "eq", "1", negate=True),
        Logic("or", (Filter(Field("b"), "in", ("1", "2")),), negate=True)), negate=True)
    assert parse_logic("or", "(data->x.eq.1)") == Logic("or", (Filter(Field("data", (("->", "x"),)), "eq", "1"),))
    assert parse_logic("or", "()") == Logic("or", ())


@pytest.mark.parametrize(("key", "value"), [("or", "a.eq.1"), ("xor", "(a.eq.1)"), ("or", "(a)"), ("or", "(a.eq.1"),
                                            ("or", "(a.zz.1)"), ("and", "(or(a.eq.1)")])
def test_logic_errors(key: str, value: str) -> None:
    refused(parse_logic, key, value)


def test_order() -> None:
    assert parse_order("price.desc.nullslast,name,created_at.asc.nullsfirst") == (
        Order(Field("price"), desc=True, nulls="last"), Order(Field("name")),
        Order(Field("created_at"), nulls="first"))
    assert parse_order("data->>n.desc") == (Order(Field("data", (("->>", "n"),)), desc=True),)
    assert parse_order("") == ()
    refused(parse_order, "price.sideways")


def test_split_top_respects_parentheses_quotes_and_escapes() -> None:
    assert split_top('a,b(c,d),"e,f",g') == ["a", "b(c,d)", '"e,f"', "g"]
    assert split_top('"a\\",b",c') == ['"a\\",b"', "c"]
    assert split_top("a.b", ".") == ["a", "b"]
    for bad in ("a)", "(a", '"a', ")a("):
        refused(split_top, bad)


# -- properties -------------------------------------------------------------------------------------

KEYS = st.sampled_from(["name", "price", "id", "inventory", "vendor_id", "or", "and", "not.or", "not.and", "select",
                        "order", "limit", "offset", "nope", "name->x", "price::text", "vendors.shop_name",
                        "vendors.order", "items.or"])
VALUES = st.one_of(
    st.text(max_size=30),
    st.lists(st.sampled_from([*'abc(),."*:!\\- 1', "eq", "in", "not.", "or(", "and(", "->", "->>", "::"]),
             max_size=20).map("".join),
    st.builds(lambda op, v: f"{op}.{v}", st.sampled_from(["eq", "neq", "gt", "lt", "like", "ilike", "in", "is", "cs",
                                                          "fts", "not.eq", "not.in", "zz", "match", "fts(simple)"]),
              st.text(max_size=20)),
    st.builds(lambda a, b: f"({a},{b})", st.text(max_size=15), st.text(max_size=15)),
)


def _request(params: list[tuple[str, str]]) -> Request:
    from urllib.parse import urlencode

    return Request({"type": "http", "method": "GET", "path": "/rest/v1/products", "headers": [],
                    "query_string": urlencode(params).encode()})


@given(params=st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=4))
def test_any_query_parses_or_gets_a_400(params: list[tuple[str, str]]) -> None:
    """The HTTP fuzz's property, on the parser alone: a spec, or a 400 PGRST100 (never a 5xx-to-be)."""
    try:
        RestAPI._spec(_request(params))
    except RestError as e:
        assert (e.status, e.code) == (400, "PGRST100"), (params, e.message)


@given(text=VALUES)
def test_each_parser_answers_data_or_a_400(text: str) -> None:
    for call, args in ((parse_select, (text,)), (parse_order, (text,)), (parse_field, (text,)),
                       (parse_filter, ("col", text)), (parse_logic, ("or", text)), (split_top, (text,))):
        try:
            call(*args)
        except RestError as e:
            assert (e.status, e.code) == (400, "PGRST100")


NAMES = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True).filter(lambda s: s not in ("inner", "left"))
WORDS = st.from_regex(r"[A-Za-z0-9_]{1,8}", fullmatch=True)
FIELDS = st.builds(Field, NAMES, st.lists(st.tuples(st.sampled_from(["->", "->>"]), WORDS), max_size=2).map(tuple),
                   st.none() | st.sampled_from(["text", "int", "numeric"]), st.none() | NAMES)


def _render_select(items: tuple[Field | Star | Embed, ...]) -> str:
    out = []
    for it in items:
        if isinstance(it, Star):
            out.append("*")
        elif isinstance(it, Field):
            path = "".join(f"{arrow}{key}" for arrow, key in it.path)
            out.append(f"{it.alias + ':' if it.alias else ''}{it.name}{path}{'::' + it.cast if it.cast else ''}")
        else:
            hint = f"!{it.hint}" if it.hint else ""
            out.append(f"{it.alias + ':' if it.alias else ''}{it.relation}{hint}{'!inner' if it.inner else ''}"
                       f"({_render_select(it.select)})")
    return ",".join(out)


SELECTS = st.recursive(
    st.lists(FIELDS | st.just(Star()), min_size=1, max_size=3).map(tuple),
    lambda inner: st.lists(FIELDS | st.builds(Embed, NAMES, st.none() | NAMES, st.none() | NAMES, st.booleans(), inner),
                           min_size=1, max_size=3).map(tuple),
    max_leaves=8,
)


@given(SELECTS)
def test_select_round_trip(items: tuple[Field | Star | Embed, ...]) -> None:
    assert parse_select(_render_select(items)) == items


LEAVES = st.one_of(
    st.builds(lambda f, op, v, n: Filter(Field(f), op, v, n), NAMES, st.sampled_from(["eq", "neq", "gt", "lte", "like",
              "match", "cs"]), WORDS, st.booleans()),
    st.builds(lambda f, vs, n: Filter(Field(f), "in", tuple(vs), n), NAMES, st.lists(WORDS, max_size=3), st.booleans()),
    st.builds(lambda f, v, n: Filter(Field(f), "is", v, n), NAMES, st.sampled_from(["null", "true", "not_null"]),
              st.booleans()),
)
TREES = st.recursive(LEAVES, lambda kids: st.builds(Logic, st.sampled_from(["and", "or"]),
                                                    st.lists(kids, min_size=1, max_size=3).map(tuple), st.booleans()),
                     max_leaves=10)


def _render(node: Filter | Logic) -> str:
    neg = "not." if node.negate else ""
    if isinstance(node, Logic):
        return f"{neg}{node.op}({','.join(_render(c) for c in node.children)})"
    value = f"({','.join(node.value)})" if isinstance(node.value, tuple) else node.value
    return f"{node.field.name}.{neg}{node.op}.{value}"


@given(op=st.sampled_from(["and", "or"]), children=st.lists(TREES, min_size=1, max_size=3), negate=st.booleans())
def test_logic_round_trip(op: str, children: list[Filter | Logic], negate: bool) -> None:
    key = f"{'not.' if negate else ''}{op}"
    value = "(" + ",".join(_render(c) for c in children) + ")"
    assert parse_logic(key, value) == Logic(op, tuple(children), negate)


@given(st.lists(st.tuples(FIELDS.filter(lambda f: f.alias is None and f.cast is None), st.none() | st.booleans(),
                          st.none() | st.sampled_from(["first", "last"])), min_size=1, max_size=4))
def test_order_round_trip(items: list[tuple[Field, bool | None, str | None]]) -> None:
    def render(f: Field, desc: bool | None, nulls: str | None) -> str:
        path = "".join(f"{arrow}{key}" for arrow, key in f.path)
        direction = "" if desc is None else (".desc" if desc else ".asc")
        return f"{f.name}{path}{direction}{'.nulls' + nulls if nulls else ''}"

    text = ",".join(render(*it) for it in items)
    assert parse_order(text) == tuple(Order(f, bool(desc), nulls) for f, desc, nulls in items)
