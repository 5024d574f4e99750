"""PostgREST's URL grammar, parsed into plain data: select lists with embedding, filters with
operators and logic trees, ordering.

Hand-written because no library parses this grammar; it follows PostgREST's documentation
("Tables and Views", "Resource Embedding"). Parsing is pure and never touches the database;
every name it returns is checked against the schema cache before SQL is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stack.rest.errors import parse_error

__all__ = ["Embed", "Field", "Filter", "Logic", "Order", "Star", "parse_filter", "parse_logic", "parse_order",
           "parse_select", "split_top"]

OPERATORS = {"eq", "neq", "gt", "gte", "lt", "lte", "like", "ilike", "match", "imatch", "in", "is", "isdistinct",
             "cs", "cd", "ov", "sl", "sr", "nxr", "nxl", "adj", "fts", "plfts", "phfts", "wfts"}
QUANTIFIABLE = {"eq", "neq", "gt", "gte", "lt", "lte", "like", "ilike", "match", "imatch"}
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_ $\-]*$")
MAX_NESTING = 32  # deeper embeds or logic trees get a 400, not Python's RecursionError (a 500)
CAST = re.compile(r"^[A-Za-z_][A-Za-z0-9_ \[\]]*$")


@dataclass(frozen=True)
class Field:
    name: str
    path: tuple[tuple[str, str], ...] = ()  # ("->" | "->>", key)
    cast: str | None = None
    alias: str | None = None
    agg: str | None = None  # count | sum | avg | max | min: ``id.sum()``, ``count()``
    agg_cast: str | None = None  # ``id.sum()::text``: a cast of the aggregate's result

    @property
    def label(self) -> str:
        if self.alias:
            return self.alias
        if self.agg:
            return self.agg
        return self.path[-1][1] if self.path else self.name


@dataclass(frozen=True)
class Star:
    pass


@dataclass(frozen=True)
class Embed:
    relation: str
    alias: str | None
    hint: str | None
    inner: bool
    select: tuple[Field | Star | Embed, ...]  # () for ``rel()``: used for filtering only, leaves no key
    spread: bool = False  # ``...rel(cols)``: the columns are the parent's

    @property
    def label(self) -> str:
        return self.alias or self.relation


@dataclass(frozen=True)
class Filter:
    field: Field
    op: str
    value: str | tuple[str, ...]
    negate: bool = False
    language: str | None = None  # fts(english)
    quantifier: str | None = None  # like(any).{a*,b*}: any | all


@dataclass(frozen=True)
class Logic:
    op: str  # and | or
    children: tuple[Filter | Logic, ...]
    negate: bool = False


@dataclass(frozen=True)
class Order:
    field: Field
    desc: bool = False
    nulls: str | None = None  # first | last


def split_top(text: str, sep: str = ",") -> list[str]:
    """Split at ``sep`` outside parentheses and double quotes."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    quoted = False
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
        elif ch == '"':
            quoted = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise parse_error(f"failed to parse '{text}'", "unexpected ')'")
        elif ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
            i += 1
            continue
        cur.append(ch)
        i += 1
    if depth != 0 or quoted:
        raise parse_error(f"failed to parse '{text}'", "unbalanced parentheses or quotes")
    parts.append("".join(cur))
    return parts


def unquote(v: str) -> str:
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        return re.sub(r"\\(.)", r"\1", v[1:-1])
    return v


def _name(text: str, what: str) -> str:
    if not NAME.match(text):
        raise parse_error(f"failed to parse {what} '{text}'", "unexpected characters in a name")
    return text


AGGREGATES = ("count", "sum", "avg", "max", "min")
AGG = re.compile(r"^(.*?)\.(count|sum|avg|max|min)\(\)(?:::([A-Za-z_][A-Za-z0-9_ \[\]]*))?$")


def parse_field(text: str, allow_agg: bool = False) -> Field:
    """``alias:col->a->>b::cast``, and in a select list ``col.sum()::cast`` or ``count()``."""
    text = text.strip()
    alias = None
    m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*):(?!:)(.*)$", text)
    if m:
        alias, text = m.group(1), m.group(2)
    if allow_agg:
        cm = re.fullmatch(r"count\(\)(?:::([A-Za-z_][A-Za-z0-9_ \[\]]*))?", text)
        if cm:
            if cm.group(1) and not CAST.match(cm.group(1)):
                raise parse_error(f"failed to parse cast '{cm.group(1)}'")
            return Field("", (), None, alias, "count", cm.group(1))
        am = AGG.match(text)
        if am:
            inner = parse_field(am.group(1))
            return Field(inner.name, inner.path, inner.cast, alias, am.group(2), am.group(3))
    cast = None
    if "::" in text:
        text, cast = text.split("::", 1)
        if not CAST.match(cast):
            raise parse_error(f"failed to parse cast '{cast}'")
    quoted = re.match(r'^\s*"((?:[^"]|"")+)"(.*)$', text, re.S)  # "column whitespace"
    if quoted:
        parts = re.split(r"(->>|->)", quoted.group(2))
        if parts[0].strip():
            raise parse_error(f"failed to parse column '{text}'", "unexpected characters after a quoted name")
        name = quoted.group(1).replace('""', '"')
    else:
        parts = re.split(r"(->>|->)", text)
        name = _name(parts[0].strip(), "column")
    path = []
    for i in range(1, len(parts) - 1, 2):
        key = parts[i + 1].strip()
        if not key or not re.match(r"^[A-Za-z0-9_\- ]+$", key):
            raise parse_error(f"failed to parse json path '{text}'")
        path.append((parts[i], key))
    return Field(name, tuple(path), cast, alias)


def parse_select(text: str, _depth: int = 0) -> tuple[Field | Star | Embed, ...]:
    if _depth == 0:
        return _parse_select(text, 0) or (Star(),)
    return _parse_select(text, _depth)


def _parse_select(text: str, _depth: int) -> tuple[Field | Star | Embed, ...]:
    if _depth > MAX_NESTING:
        raise parse_error(f"failed to parse select parameter ({text[:100]})",
                          f"embedded resources nested deeper than {MAX_NESTING} levels")
    items: list[Field | Star | Embed] = []
    for raw in split_top(text or "*"):
        raw = raw.strip()
        if not raw:
            continue
        if raw == "*":
            items.append(Star())
            continue
        if _is_embed(raw):
            head, inner = raw[: raw.index("(")], raw[raw.index("(") + 1:-1]
            spread = head.startswith("...")
            head = head[3:] if spread else head
            alias = None
            if ":" in head:
                alias, head = head.split(":", 1)
                alias = _name(alias.strip(), "alias")
            parts = head.strip().split("!")
            rel = _name(parts[0].strip(), "relation")
            hint, is_inner = None, False
            for p in parts[1:]:
                if p == "inner":
                    is_inner = True
                elif p in ("left", ""):
                    continue
                else:
                    hint = _name(p, "hint")
            items.append(Embed(rel, alias, hint, is_inner,
                               _parse_items(inner, _depth + 1) if inner.strip() else (), spread))
            continue
        items.append(parse_field(raw, allow_agg=True))
    return tuple(items)


EMPTY_EMBED = re.compile(r"^(\.\.\.)?[A-Za-z_][\w:!$ -]*\(\)$")  # rel(), alias:rel!hint()
COUNT = re.compile(r"^([A-Za-z_]\w*:)?count\(\)$")


def _is_embed(raw: str) -> bool:
    if raw.endswith("()"):
        return bool(EMPTY_EMBED.match(raw)) and not COUNT.match(raw)
    return raw.endswith(")") and "(" in raw


def _parse_items(text: str, depth: int) -> tuple[Field | Star | Embed, ...]:
    return parse_select(text, depth) if text.strip() else ()


def parse_filter(key: str, value: str) -> Filter:
    """``col=[not.]op[(modifier)].value``."""
    negate = value.startswith("not.")
    if negate:
        value = value[4:]
    m = re.match(r"^([a-z]+)(?:\(([A-Za-z_]+)\))?\.(.*)$", value, re.S)
    if not m or m.group(1) not in OPERATORS:
        raise parse_error(f'"failed to parse filter ({value})" (line 1, column 1)',
                          f"unknown or missing operator in '{key}={value}'")
    op, modifier, raw = m.group(1), m.group(2), m.group(3)
    language = None
    if modifier in ("any", "all"):
        if op not in QUANTIFIABLE:
            raise parse_error(f"failed to parse filter ({value})", f"{op} takes no any/all modifier")
        if not (raw.startswith("{") and raw.endswith("}")):
            raise parse_error(f"failed to parse filter ({value})", "any/all take a list in braces: {a,b}")
        body = raw[1:-1]
        vals = tuple(unquote(v.strip()) for v in split_top(body)) if body.strip() else ()
        return Filter(parse_field(key), op, vals, negate, None, modifier)
    if modifier:
        if op not in ("fts", "plfts", "phfts", "wfts"):
            raise parse_error(f"failed to parse filter ({value})", "modifiers are supported for fts operators only")
        language = modifier
    fld = parse_field(key)
    if op == "in":
        if not (raw.startswith("(") and raw.endswith(")")):
            raise parse_error(f"failed to parse filter (in.{raw})", "the list must be wrapped in parentheses")
        body = raw[1:-1]
        vals = tuple(unquote(v.strip()) for v in split_top(body)) if body.strip() else ()
        return Filter(fld, op, vals, negate)
    if op == "is" and raw.lower() not in ("null", "true", "false", "unknown", "not_null"):
        raise parse_error(f"failed to parse filter (is.{raw})", "is takes null, not_null, true, false or unknown")
    return Filter(fld, op, unquote(raw), negate, language)


def parse_logic(key: str, value: str, _depth: int = 0) -> Logic:
    """``or=(a.eq.1,and(b.gt.2,c.is.null))``; ``key`` is or | and | not.or | not.and."""
    negate = key.startswith("not.")
    op = key[4:] if negate else key
    if op not in ("and", "or") or not (value.startswith("(") and value.endswith(")")):
        raise parse_error(f"failed to parse logic tree ({value})", "expected and=(...) or or=(...)")
    if _depth > MAX_NESTING:
        raise parse_error(f"failed to parse logic tree ({value[:100]})", f"nested deeper than {MAX_NESTING} levels")
    return Logic(op, tuple(_logic_item(p.strip(), _depth) for p in split_top(value[1:-1]) if p.strip()), negate)


def _logic_item(text: str, depth: int) -> Filter | Logic:
    m = re.match(r"^(not\.)?(and|or)(\(.*\))$", text, re.S)
    if m:
        return parse_logic((m.group(1) or "") + m.group(2), m.group(3), depth + 1)
    fm = re.match(r"^([^.]+(?:->>?[^.]+)*)\.(.*)$", text, re.S)
    if not fm:
        raise parse_error(f"failed to parse logic tree ({text})", "expected column.operator.value")
    return parse_filter(fm.group(1), fm.group(2))


def parse_order(text: str) -> tuple[Order, ...]:
    out = []
    for item in split_top(text):
        item = item.strip()
        if not item:
            continue
        parts = item.split(".")
        fld = parse_field(parts[0])
        desc, nulls = False, None
        for p in parts[1:]:
            if p in ("asc", "desc"):
                desc = p == "desc"
            elif p in ("nullsfirst", "nullslast"):
                nulls = p[5:]
            else:
                raise parse_error(f"failed to parse order ({text})", f"unexpected '{p}'")
        out.append(Order(fld, desc, nulls))
    return tuple(out)
