"""From parsed requests to SQL, as PostgREST builds it: one statement per request that renders
the response body as JSON inside PostgreSQL (so numbers, timestamps and uuids come out exactly as
PostgREST renders them).

Safety rules: every value is a bound parameter (``%s``) cast to the column's catalog type;
every identifier is one the schema cache knows, quoted by ``psycopg.sql.Identifier``; casts
come from a fixed list of type names. Nothing the caller sends is spliced into SQL text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from stack.rest.errors import RestError, no_relationship, parse_error, unknown_column, unknown_table
from stack.rest.grammar import Embed, Field, Filter, Logic, Order, Star, split_top, unquote
from stack.rest.schema_cache import ForeignKey, Function, Relation, SchemaCache

__all__ = ["CASTS", "Builder", "ReadSpec"]

CASTS = {"text", "varchar", "char", "int", "int2", "int4", "int8", "integer", "bigint", "smallint", "numeric",
         "decimal", "real", "float4", "float8", "double precision", "bool", "boolean", "json", "jsonb", "uuid",
         "date", "time", "timetz", "timestamp", "timestamptz", "interval", "money", "bytea"}
COMPARE = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "cs": "@>", "cd": "<@",
           "ov": "&&", "sl": "<<", "sr": ">>", "nxr": "&<", "nxl": "&>", "adj": "-|-"}
FTS = {"fts": "to_tsquery", "plfts": "plainto_tsquery", "phfts": "phraseto_tsquery", "wfts": "websearch_to_tsquery"}


@dataclass
class EmbedOptions:
    """Filters, order and limit aimed at an embedded resource (``rel.col=...``, ``rel.order=...``)."""

    filters: list[Filter | Logic] = field(default_factory=list)
    order: tuple[Order, ...] = ()
    limit: int | None = None
    offset: int | None = None


@dataclass
class ReadSpec:
    select: tuple[Field | Star | Embed, ...]
    filters: list[Filter | Logic] = field(default_factory=list)
    order: tuple[Order, ...] = ()
    limit: int | None = None
    offset: int = 0
    embeds: dict[str, EmbedOptions] = field(default_factory=dict)


def cast_type(name: str) -> sql.Composable:
    base = name.strip().lower()
    arr = base.endswith("[]")
    core = base.removesuffix("[]").strip()
    if core not in CASTS:
        raise parse_error(f"unsupported cast '{name}'", f"casts allowed: {', '.join(sorted(CASTS))}")
    return sql.SQL(core + ("[]" if arr else ""))


class Builder:
    def __init__(self, cache: SchemaCache, schema: str) -> None:
        self.cache = cache
        self.schema = schema
        self.params: dict[str, Any] = {}  # named placeholders: SQL pieces may be built in any order
        self._aliases = 0

    def alias(self) -> str:
        self._aliases += 1
        return f"pgrst_{self._aliases}"

    def p(self, value: Any) -> sql.Composable:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return sql.Placeholder(name)

    def relation(self, name: str) -> Relation:
        rel = self.cache.relation(self.schema, name)
        if rel is None:
            raise unknown_table(self.schema, name)
        return rel

    @staticmethod
    def ident(rel: Relation) -> sql.Composable:
        return sql.Identifier(rel.schema, rel.name)

    # -- expressions ---------------------------------------------------------------------------------
    def column(self, rel: Relation, alias: str, f: Field) -> tuple[sql.Composable, str]:
        """The SQL for a field and the type its values compare as."""
        col = rel.columns.get(f.name)
        if col is None:
            raise unknown_column(rel.name, f.name)
        expr: sql.Composable = sql.Identifier(alias, f.name)
        typ = col.type
        for op, key in f.path:
            expr = sql.SQL("({} {} {})").format(expr, sql.SQL(op), self.p(key))
            typ = "text" if op == "->>" else "jsonb"
        if f.cast:
            expr = sql.SQL("({})::{}").format(expr, cast_type(f.cast))
            typ = f.cast
        return expr, typ

    def _typed(self, value: Any, typ: str) -> sql.Composable:
        return sql.SQL("({})::{}").format(self.p(value), sql.SQL(_safe_type(typ)))

    def condition(self, rel: Relation, alias: str, f: Filter | Logic) -> sql.Composable:
        if isinstance(f, Logic):
            joiner = sql.SQL(" AND " if f.op == "and" else " OR ")
            inner = joiner.join(self.condition(rel, alias, c) for c in f.children) if f.children else sql.SQL("true")
            out: sql.Composable = sql.SQL("({})").format(inner)
            return sql.SQL("NOT {}").format(out) if f.negate else out
        lhs, typ = self.column(rel, alias, f.field)
        op, v = f.op, f.value
        cond: sql.Composable
        if op in ("eq", "neq", "gt", "gte", "lt", "lte", "cs", "cd", "ov", "sl", "sr", "nxr", "nxl", "adj"):
            cond = sql.SQL("{} {} {}").format(lhs, sql.SQL(COMPARE[op]), self._typed(v, typ))
        elif op in ("like", "ilike"):
            pattern = str(v).replace("*", "%")
            cond = sql.SQL("({})::text {} {}").format(lhs, sql.SQL("LIKE" if op == "like" else "ILIKE"), self.p(pattern))
        elif op in ("match", "imatch"):
            cond = sql.SQL("({})::text {} {}").format(lhs, sql.SQL("~" if op == "match" else "~*"), self.p(str(v)))
        elif op == "in":
            vals = list(v) if isinstance(v, tuple) else [v]
            cond = sql.SQL("{} = ANY(({})::{})").format(lhs, self.p(vals), sql.SQL(_safe_type(typ) + "[]")) \
                if vals else sql.SQL("false")
        elif op == "is":
            word = str(v).lower()
            cond = sql.SQL("{} IS {}").format(lhs, sql.SQL({"null": "NULL", "not_null": "NOT NULL", "true": "TRUE",
                                                            "false": "FALSE", "unknown": "UNKNOWN"}[word]))
        elif op == "isdistinct":
            cond = sql.SQL("{} IS DISTINCT FROM {}").format(lhs, self._typed(v, typ))
        elif op in FTS:
            fn = sql.SQL(FTS[op])
            q = sql.SQL("{}(({})::regconfig, {})").format(fn, self.p(f.language), self.p(str(v))) if f.language \
                else sql.SQL("{}({})").format(fn, self.p(str(v)))
            doc = lhs if typ == "tsvector" else sql.SQL("to_tsvector({})").format(
                sql.SQL("({})::regconfig, ").format(self.p(f.language)) + lhs if f.language else lhs)
            cond = sql.SQL("{} @@ {}").format(doc, q)
        else:  # pragma: no cover - the grammar admits only the operators above
            raise parse_error(f"unknown operator {op}")
        return sql.SQL("NOT ({})").format(cond) if f.negate else cond

    def where(self, rel: Relation, alias: str, filters: list[Filter | Logic]) -> sql.Composable:
        if not filters:
            return sql.SQL("true")
        return sql.SQL(" AND ").join(self.condition(rel, alias, f) for f in filters)

    def order_by(self, rel: Relation, alias: str, order: tuple[Order, ...]) -> sql.Composable:
        if not order:
            return sql.SQL("")
        parts = []
        for o in order:
            expr, _ = self.column(rel, alias, o.field)
            s = sql.SQL("{} {}").format(expr, sql.SQL("DESC" if o.desc else "ASC"))
            if o.nulls:
                s = sql.SQL("{} NULLS {}").format(s, sql.SQL(o.nulls.upper()))
            parts.append(s)
        return sql.SQL(" ORDER BY ") + sql.SQL(", ").join(parts)

    # -- select lists and embedding -----------------------------------------------------------------------
    def select_list(self, rel: Relation, alias: str, items: tuple[Field | Star | Embed, ...],
                    embeds: dict[str, EmbedOptions], prefix: str = "") -> tuple[sql.Composable, list[sql.Composable]]:
        """The select list, and the parent-level conditions that !inner embeds add."""
        cols: list[sql.Composable] = []
        inner_conds: list[sql.Composable] = []
        for item in items:
            if isinstance(item, Star):
                cols += [sql.SQL("{} AS {}").format(sql.Identifier(alias, c), sql.Identifier(c)) for c in rel.columns]
            elif isinstance(item, Field):
                expr, _ = self.column(rel, alias, item)
                cols.append(sql.SQL("{} AS {}").format(expr, sql.Identifier(item.label)))
            else:
                expr, cond = self.embed(rel, alias, item, embeds, prefix)
                cols.append(sql.SQL("{} AS {}").format(expr, sql.Identifier(item.label)))
                if cond is not None:
                    inner_conds.append(cond)
        if not cols:
            raise parse_error("empty select list")
        return sql.SQL(", ").join(cols), inner_conds

    def resolve(self, parent: Relation, e: Embed) -> tuple[Relation, ForeignKey, bool]:
        target = self.cache.relation(self.schema, e.relation)
        candidates: list[tuple[ForeignKey, bool]] = []
        if target is not None:
            candidates = self.cache.relationships(parent, target.name)
            if e.hint:
                candidates = [(fk, fwd) for fk, fwd in candidates
                              if fk.name == e.hint or e.hint in fk.columns or e.hint in fk.ref_columns]
        else:  # "vendor:vendor_id(*)": a foreign key column of the parent names the target
            for fk in self.cache.fks:
                if (fk.schema, fk.table) == (parent.schema, parent.name) and fk.columns == (e.relation,):
                    candidates.append((fk, True))
                    target = self.cache.relation(fk.ref_schema, fk.ref_table)
        if not candidates or target is None:
            raise no_relationship(parent.name, e.relation)
        if len(candidates) > 1:
            raise RestError(300, "PGRST201", f"Could not embed because more than one relationship was found for "
                                             f"'{parent.name}' and '{e.relation}'",
                            "; ".join(f"{fk.name} ({'many-to-one' if fwd else 'one-to-many'})" for fk, fwd in candidates),
                            f"Try changing '{e.relation}' to one of the following: "
                            + ", ".join(f"'{e.relation}!{fk.name}'" for fk, _ in candidates))
        fk, forward = candidates[0]
        return target, fk, forward

    def embed(self, parent: Relation, palias: str, e: Embed, embeds: dict[str, EmbedOptions],
              prefix: str) -> tuple[sql.Composable, sql.Composable | None]:
        target, fk, forward = self.resolve(parent, e)
        calias = self.alias()
        key = prefix + e.label
        opts = embeds.get(key, EmbedOptions())
        if forward:  # many-to-one: the parent holds the key, the embed is an object (or null)
            join = sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier(calias, rc), sql.Identifier(palias, c))
                                         for c, rc in zip(fk.columns, fk.ref_columns, strict=True))
        else:  # one-to-many: the target holds the key, the embed is an array
            join = sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier(calias, c), sql.Identifier(palias, rc))
                                         for c, rc in zip(fk.columns, fk.ref_columns, strict=True))
        sel, inner_conds = self.select_list(target, calias, e.select, embeds, key + ".")
        conds = [join, self.where(target, calias, opts.filters), *inner_conds]
        where = sql.SQL(" AND ").join(conds)
        src = sql.SQL("SELECT {} FROM {} AS {} WHERE {}").format(sel, self.ident(target), sql.Identifier(calias), where)
        if forward:
            expr = sql.SQL("(SELECT row_to_json(pgrst_e) FROM ({} LIMIT 1) pgrst_e)").format(src)
        else:
            src = src + self.order_by(target, calias, opts.order)
            if opts.limit is not None:
                src = src + sql.SQL(" LIMIT {}").format(self.p(opts.limit))
            if opts.offset:
                src = src + sql.SQL(" OFFSET {}").format(self.p(opts.offset))
            expr = sql.SQL("COALESCE((SELECT json_agg(pgrst_e) FROM ({}) pgrst_e), '[]'::json)").format(src)
        return expr, (self.inner_exists(parent, palias, e, embeds, prefix) if e.inner else None)

    def inner_exists(self, parent: Relation, palias: str, e: Embed, embeds: dict[str, EmbedOptions],
                     prefix: str) -> sql.Composable:
        """``!inner``: the parent row is kept only if the embedded resource has a (filtered) row."""
        target, fk, forward = self.resolve(parent, e)
        ealias = self.alias()
        pairs = zip(fk.columns, fk.ref_columns, strict=True)
        join = sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier(ealias, rc), sql.Identifier(palias, c)) if forward
            else sql.SQL("{} = {}").format(sql.Identifier(ealias, c), sql.Identifier(palias, rc)) for c, rc in pairs)
        opts = embeds.get(prefix + e.label, EmbedOptions())
        return sql.SQL("EXISTS (SELECT 1 FROM {} AS {} WHERE {} AND {})").format(
            self.ident(target), sql.Identifier(ealias), join, self.where(target, ealias, opts.filters))

    # -- statements ---------------------------------------------------------------------------------------
    def read(self, rel: Relation, spec: ReadSpec, count: bool, single_row: bool = False) -> sql.Composed:
        """SELECT total, page count, body (JSON text) for a table or view."""
        a = self.alias()
        total: sql.Composable = sql.SQL("NULL::bigint")
        if count:
            ca = self.alias()
            total = sql.SQL("(SELECT count(*) FROM {} AS {} WHERE {})").format(
                self.ident(rel), sql.Identifier(ca), self._where_with_inner(rel, ca, spec))
        sel, inner = self.select_list(rel, a, spec.select, spec.embeds)
        where = sql.SQL(" AND ").join([self.where(rel, a, spec.filters), *inner])
        q = sql.SQL("SELECT {} FROM {} AS {} WHERE {}").format(sel, self.ident(rel), sql.Identifier(a), where)
        q = q + self.order_by(rel, a, spec.order)
        if spec.limit is not None:
            q = q + sql.SQL(" LIMIT {}").format(self.p(spec.limit))
        if spec.offset:
            q = q + sql.SQL(" OFFSET {}").format(self.p(spec.offset))
        return self._wrap(total, q, single_row)

    def _where_with_inner(self, rel: Relation, alias: str, spec: ReadSpec) -> sql.Composable:
        conds = [self.where(rel, alias, spec.filters)]
        for item in spec.select:
            if isinstance(item, Embed) and item.inner:
                conds.append(self.inner_exists(rel, alias, item, spec.embeds, ""))
        return sql.SQL(" AND ").join(conds)

    @staticmethod
    def _wrap(total: sql.Composable, q: sql.Composable, single_row: bool) -> sql.Composed:
        body = sql.SQL("coalesce((json_agg(pgrst_r) -> 0)::text, 'null')") if single_row \
            else sql.SQL("coalesce(json_agg(pgrst_r), '[]'::json)::text")
        return sql.SQL("SELECT {} AS total, count(pgrst_r) AS n, {} AS body FROM ({}) pgrst_r").format(total, body, q)

    def write_columns(self, rel: Relation, rows: list[dict[str, Any]], columns: str | None) -> list[str]:
        names = [unquote(c.strip()) for c in split_top(columns)] if columns else []
        if not names:
            seen: dict[str, None] = {}
            for r in rows:
                for k in r:
                    seen.setdefault(k, None)
            names = list(seen)
        for n in names:
            if n not in rel.columns:
                raise RestError(400, "PGRST204", f"Could not find the '{n}' column of '{rel.name}' in the schema cache")
        return names

    def insert(self, rel: Relation, rows: list[dict[str, Any]], cols: list[str], on_conflict: list[str] | None,
               resolution: str | None, returning: bool, missing_default: bool = False) -> sql.Composed:
        a = self.alias()
        collist = sql.SQL(", ").join(sql.Identifier(c) for c in cols)
        if missing_default:  # a key absent from an object takes the column's default, not NULL
            picks_list: list[sql.Composable] = []
            for c in cols:
                default = rel.columns[c].default
                picks_list.append(sql.SQL(
                    "CASE WHEN pgrst_e ? {} THEN (jsonb_populate_record(NULL::{}, pgrst_e)).{} ELSE {} END").format(
                    sql.Literal(c), self.ident(rel), sql.Identifier(c), sql.SQL(default or "NULL")))
            picks = sql.SQL(", ").join(picks_list)
            src = sql.SQL("SELECT {} FROM jsonb_array_elements({}::jsonb) pgrst_e").format(picks, self.p(json.dumps(rows)))
        else:
            src = sql.SQL("SELECT {} FROM json_populate_recordset(NULL::{}, {}::json)").format(
                collist, self.ident(rel), self.p(json.dumps(rows)))
        stmt = sql.SQL("INSERT INTO {} AS {} ({}) {}").format(self.ident(rel), sql.Identifier(a), collist, src) \
            if cols else sql.SQL("INSERT INTO {} AS {} DEFAULT VALUES").format(self.ident(rel), sql.Identifier(a))
        if resolution:
            target = on_conflict or list(rel.pk)
            for c in target:
                if c not in rel.columns:
                    raise unknown_column(rel.name, c)
            if not target:
                raise RestError(400, "PGRST114", "Upsert needs on_conflict or a primary key")
            tl = sql.SQL(", ").join(sql.Identifier(c) for c in target)
            if resolution == "ignore-duplicates":
                stmt = stmt + sql.SQL(" ON CONFLICT ({}) DO NOTHING").format(tl)
            else:
                upd = [c for c in cols if c not in target] or cols
                sets = sql.SQL(", ").join(sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
                                          for c in upd)
                stmt = stmt + sql.SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(tl, sets)
        if returning:
            stmt = stmt + sql.SQL(" RETURNING {}.*").format(sql.Identifier(a))
        return stmt

    def update(self, rel: Relation, body: dict[str, Any], cols: list[str], filters: list[Filter | Logic],
               returning: bool) -> sql.Composed:
        a = self.alias()
        collist = sql.SQL(", ").join(sql.Identifier(c) for c in cols)
        src = sql.SQL("(SELECT {} FROM json_populate_record(NULL::{}, {}::json))").format(
            collist, self.ident(rel), self.p(json.dumps(body)))
        stmt = sql.SQL("UPDATE {} AS {} SET ({}) = {} WHERE {}").format(
            self.ident(rel), sql.Identifier(a), collist, src, self.where(rel, a, filters))
        if returning:
            stmt = stmt + sql.SQL(" RETURNING {}.*").format(sql.Identifier(a))
        return stmt

    def delete(self, rel: Relation, filters: list[Filter | Logic], returning: bool) -> sql.Composed:
        a = self.alias()
        stmt = sql.SQL("DELETE FROM {} AS {} WHERE {}").format(self.ident(rel), sql.Identifier(a),
                                                              self.where(rel, a, filters))
        if returning:
            stmt = stmt + sql.SQL(" RETURNING {}.*").format(sql.Identifier(a))
        return stmt

    def returned(self, rel: Relation, write: sql.Composable, spec: ReadSpec, single_row: bool) -> sql.Composed:
        """Body of a write's returned rows, shaped by ``select`` (embedding works on them too)."""
        a = self.alias()
        sel, _ = self.select_list(rel, a, spec.select, spec.embeds)
        q = sql.SQL("SELECT {} FROM pgrst_source AS {}").format(sel, sql.Identifier(a))
        return sql.SQL("WITH pgrst_source AS ({}) ").format(write) + self._wrap(sql.SQL("NULL::bigint"), q, single_row)

    def rpc(self, fn: Function, args: dict[str, Any], spec: ReadSpec, single_row: bool) -> sql.Composed:
        named = []
        for name, typ in zip(fn.arg_names, fn.arg_types, strict=True):
            if name in args:
                v = args[name]
                text = None if v is None else (json.dumps(v) if isinstance(v, dict | list) else
                                               ("true" if v is True else "false" if v is False else str(v)))
                named.append(sql.SQL("{} => {}").format(sql.Identifier(name), self._typed(text, typ)))
        call = sql.SQL("{}({})").format(sql.Identifier(fn.schema, fn.name), sql.SQL(", ").join(named))
        if not fn.returns_set and not fn.returns_composite:
            return sql.SQL("SELECT NULL::bigint AS total, 1 AS n, to_json({})::text AS body").format(call)
        a = self.alias()
        where = sql.SQL(" AND ").join(self._free_condition(a, f) for f in spec.filters) if spec.filters \
            else sql.SQL("true")
        if fn.returns_composite:
            q = sql.SQL("SELECT {}.* FROM {} AS {} WHERE {}").format(sql.Identifier(a), call, sql.Identifier(a), where)
        else:  # setof a scalar: PostgREST returns the bare values
            q = sql.SQL("SELECT {} AS v FROM {} AS {}").format(sql.Identifier(a), call, sql.Identifier(a))
        for o in spec.order:
            q = q + sql.SQL(" ORDER BY {} {}").format(sql.Identifier(a, o.field.name), sql.SQL("DESC" if o.desc else "ASC"))
            break
        if spec.limit is not None:
            q = q + sql.SQL(" LIMIT {}").format(self.p(spec.limit))
        if spec.offset:
            q = q + sql.SQL(" OFFSET {}").format(self.p(spec.offset))
        if not fn.returns_set:
            single_row = True
        if fn.returns_composite:
            return self._wrap(sql.SQL("NULL::bigint"), q, single_row)
        return sql.SQL("SELECT NULL::bigint AS total, count(*) AS n, coalesce(json_agg(pgrst_r.v), '[]'::json)::text"
                       " AS body FROM ({}) pgrst_r").format(q)

    def _free_condition(self, alias: str, f: Filter | Logic) -> sql.Composable:
        """A filter on a function's result columns (not in the schema cache): the column is quoted, the
        value compared as text-typed unknown so PostgreSQL infers the type."""
        if isinstance(f, Logic):
            joiner = sql.SQL(" AND " if f.op == "and" else " OR ")
            out: sql.Composable = sql.SQL("({})").format(joiner.join(self._free_condition(alias, c) for c in f.children))
            return sql.SQL("NOT {}").format(out) if f.negate else out
        if f.field.path or f.field.cast or f.op not in ("eq", "neq", "gt", "gte", "lt", "lte", "is", "in", "like",
                                                        "ilike"):
            raise parse_error(f"unsupported filter on a function result: {f.field.name}.{f.op}")
        lhs = sql.Identifier(alias, f.field.name)
        if f.op == "is":
            cond = sql.SQL("{} IS {}").format(lhs, sql.SQL({"null": "NULL", "not_null": "NOT NULL", "true": "TRUE",
                                                            "false": "FALSE", "unknown": "UNKNOWN"}[str(f.value).lower()]))
        elif f.op == "in":
            cond = sql.SQL("({})::text = ANY({})").format(lhs, self.p(list(f.value)))
        elif f.op in ("like", "ilike"):
            cond = sql.SQL("({})::text {} {}").format(lhs, sql.SQL(f.op.upper()), self.p(str(f.value).replace("*", "%")))
        else:
            cond = sql.SQL("({})::text {} {}").format(lhs, sql.SQL(COMPARE[f.op]), self.p(str(f.value)))
        return sql.SQL("NOT ({})").format(cond) if f.negate else cond


def _safe_type(typ: str) -> str:
    """Catalog type names (format_type output) are safe to splice; anything else is refused."""
    t = typ.strip()
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789_ ()[],\"")
    if not t or any(ch.lower() not in allowed for ch in t) or ";" in t or "--" in t:
        raise parse_error(f"unsupported type '{typ}'")
    return t
