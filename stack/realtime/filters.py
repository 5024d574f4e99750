"""postgres_changes subscription parameters: parse them as Supabase Realtime does, match rows.

Grammar (supabase/realtime ``Subscriptions.parse_subscription_params``):
``column=op.value`` segments joined by top-level commas (AND), an optional
``not.`` before the operator, values optionally double-quoted, ``in.(a,b,"c,d")``.
Operators: eq, neq, lt, lte, gt, gte, in, like, ilike, is, match, imatch, isdistinct.

Matching happens in Python on the decoded WAL row, typed by the column's
PostgreSQL type as wal2json reports it, with SQL's three-valued logic (a
comparison with NULL never matches, negated or not). Hand-written: the grammar
is Supabase's own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["ColumnFilter", "FilterError", "Subscription", "parse_filter", "parse_params"]

OPERATORS = frozenset({"eq", "neq", "lt", "lte", "gt", "gte", "in", "like", "ilike", "is", "match", "imatch",
                       "isdistinct"})
_NUMERIC = re.compile(r"^(smallint|integer|bigint|int[248]?|numeric|decimal|real|double precision|float[48]?|oid)")
_TIME = re.compile(r"^(timestamp|date|time)")


class FilterError(ValueError):
    """Bad subscription parameters; the message is what Supabase would push as a system error."""


@dataclass(frozen=True)
class ColumnFilter:
    column: str
    op: str
    value: str | tuple[str, ...]
    negate: bool = False


@dataclass(frozen=True)
class Subscription:
    """One postgres_changes binding of a channel, as the server assigns it."""

    event: str  # "*", "INSERT", "UPDATE", "DELETE"
    schema: str
    table: str  # "*" = every table of the schema in the publication
    filters: tuple[ColumnFilter, ...] = ()
    select: tuple[str, ...] | None = None


def _split_top_level(text: str, opened: bool = False) -> list[str]:
    """Split at commas outside parentheses and quotes. A quote opens a quoted value only where a value
    starts: after ``.``, ``(`` or a comma (spaces between ignored), or at the start of an ``in`` list's
    body (``opened``), so ``in.(a, "b,c")`` is two values."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    quoted = False
    prev = "(" if opened else ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\" and i + 1 < len(text):
                cur.append(text[i:i + 2])
                i += 2
                continue
            if ch == '"':
                quoted = False
            cur.append(ch)
        elif ch == '"' and prev in (".", "(", ","):
            quoted = True
            cur.append(ch)
        elif ch == "(":
            depth += 1
            cur.append(ch)
        elif ch == ")":
            depth = max(0, depth - 1)
            cur.append(ch)
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        if ch != " ":
            prev = ch
        i += 1
    parts.append("".join(cur))
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        out: list[str] = []
        i = 1
        while i < len(value) - 1:
            if value[i] == "\\" and i + 1 < len(value) - 1:
                out.append(value[i + 1])
                i += 2
                continue
            if value[i] == '"':
                return value  # an unescaped quote inside: keep as given, as Supabase does
            out.append(value[i])
            i += 1
        return "".join(out)
    return value


def _split_in_list(body: str) -> tuple[str, ...]:
    return tuple(_unquote(p.strip()) for p in _split_top_level(body, opened=True) if p.strip() != "")


def parse_filter(text: str) -> tuple[ColumnFilter, ...]:
    text = text.strip()
    if not text:
        return ()
    out: list[ColumnFilter] = []
    for seg in _split_top_level(text):
        seg = seg.strip()
        if not seg:
            raise FilterError("Error parsing `filter` params: filter must not contain empty segments "
                              "(check for extra commas)")
        col, eq, rest = seg.partition("=")
        if not eq or not col:
            raise FilterError(f"Error parsing `filter` params: {seg!r}")
        negate = rest.startswith("not.")
        if negate:
            rest = rest[4:]
        op, dot, value = rest.partition(".")
        if not dot or op not in OPERATORS:
            raise FilterError(f"Error parsing `filter` params: unsupported operator in {seg!r}")
        if op == "in":
            if not (len(value) >= 2 and value[0] == "(" and value[-1] == ")"):
                raise FilterError("Error parsing `filter` params: `in` filter value must be wrapped by parentheses")
            out.append(ColumnFilter(col, op, _split_in_list(value[1:-1]), negate))
        else:
            out.append(ColumnFilter(col, op, _unquote(value), negate))
    return tuple(out)


def parse_params(params: Any) -> Subscription:
    """One element of the join payload's ``config.postgres_changes``."""
    if not isinstance(params, dict):
        raise FilterError("No subscription params provided. Please provide at least a `schema` or `table` "
                          "to subscribe to")
    ev = params.get("event", "*")
    event = ev.upper() if isinstance(ev, str) and ev.upper() in ("INSERT", "UPDATE", "DELETE") else "*"
    schema, table, flt = params.get("schema"), params.get("table"), params.get("filter")
    if schema is None and isinstance(table, str):
        schema = "public"
    if table is None and isinstance(schema, str) and flt is None:
        table = "*"
    if not isinstance(schema, str) or not isinstance(table, str) or (flt is not None and not isinstance(flt, str)):
        raise FilterError("No subscription params provided. Please provide at least a `schema` or `table` "
                          "to subscribe to")
    select = params.get("select")
    sel: tuple[str, ...] | None = None
    if isinstance(select, str):
        raise FilterError("Error parsing `select` params: expected a list of column name strings")
    if isinstance(select, list):
        cols = tuple(c for c in select if isinstance(c, str))
        sel = cols or None
        if sel and (schema == "*" or table == "*"):
            raise FilterError("Column selection is not supported for wildcard subscriptions. "
                              "Provide an explicit schema and table name.")
    return Subscription(event=event, schema=schema, table=table, filters=parse_filter(flt or ""), select=sel)


# -- matching --------------------------------------------------------------------------------------

def _coerce(raw: Any, pgtype: str, text: str) -> tuple[Any, Any] | None:
    """Bring the row's value and the filter's text to one comparable type; None if impossible."""
    t = pgtype.lower()
    try:
        if t == "boolean" or t == "bool":
            b = text.strip().lower()
            if b in ("t", "true", "yes", "on", "1"):
                return bool(raw), True
            if b in ("f", "false", "no", "off", "0"):
                return bool(raw), False
            return None
        if _NUMERIC.match(t):
            return Decimal(str(raw)), Decimal(text.strip())
        if _TIME.match(t):
            return _parse_time(str(raw)), _parse_time(text)
        if t == "uuid":
            return str(raw).lower(), text.strip().lower()
    except (InvalidOperation, ValueError):
        return None
    return (raw if isinstance(raw, str) else _as_text(raw)), text


def _as_text(raw: Any) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw)


def _parse_time(s: str) -> datetime:
    s = s.strip().replace("T", " ")
    if s.endswith(("+00", "-00")) or re.search(r"[+-]\d\d$", s):
        s += ":00"
    s = s.replace("Z", "+00:00")
    return datetime.fromisoformat(s)


def _like(pattern: str, ci: bool) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z", re.S | (re.I if ci else 0))


def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "eq":
        return bool(a == b)
    if op == "neq":
        return bool(a != b)
    if op == "lt":
        return bool(a < b)
    if op == "lte":
        return bool(a <= b)
    if op == "gt":
        return bool(a > b)
    return bool(a >= b)  # gte


def _eval(f: ColumnFilter, raw: Any, pgtype: str) -> bool | None:
    """Three-valued: True, False or None (SQL NULL)."""
    if f.op == "is":
        v = str(f.value).lower()
        if v == "null":
            return raw is None
        if v in ("true", "false"):
            return raw is not None and bool(raw) is (v == "true")
        if v == "unknown":
            return raw is None
        return None
    if f.op == "isdistinct":
        if raw is None:
            return str(f.value).lower() != "null"
        pair = _coerce(raw, pgtype, str(f.value))
        return None if pair is None else pair[0] != pair[1]
    if raw is None:
        return None
    if f.op == "in":
        vals = f.value if isinstance(f.value, tuple) else (f.value,)
        hits = [_coerce(raw, pgtype, v) for v in vals]
        return any(h is not None and h[0] == h[1] for h in hits)
    text = str(f.value)
    if f.op in ("like", "ilike"):
        return _like(text, f.op == "ilike").match(_as_text(raw)) is not None
    if f.op in ("match", "imatch"):
        try:
            return re.search(text, _as_text(raw), re.I if f.op == "imatch" else 0) is not None
        except re.error:
            return None
    pair = _coerce(raw, pgtype, text)
    if pair is None:
        return None
    try:
        return _compare(f.op, pair[0], pair[1])
    except TypeError:
        return None


def matches(filters: tuple[ColumnFilter, ...], record: dict[str, Any], types: dict[str, str]) -> bool:
    """All filters hold for ``record`` (a filter on a column the row lacks never holds)."""
    for f in filters:
        if f.column not in record:
            return False
        r = _eval(f, record[f.column], types.get(f.column, "text"))
        if r is None:
            return False
        if r == f.negate:
            return False
    return True
