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

from stack.rest.errors import RestError, parse_error, unknown_column, unknown_table
from stack.rest.grammar import Embed, Field, Filter, Logic, Order, Star, split_top, unquote
from stack.rest.relationships import Link, resolve
from stack.rest.schema_cache import Column, Function, Relation, SchemaCache

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


@dataclass(frozen=True)
class Item:
    """One entry of a select list."""

    expr: sql.Composable
    label: str
    agg: bool = False


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
        expr: sql.Composable
        if col is None:
            fn = self.cache.computed.get((rel.schema, rel.name), {}).get(f.name)
            if fn is None or fn.returns_set or fn.return_rel is not None:
                raise unknown_column(rel.name, f.name)
            # a computed field: a function of the row, called as PostgREST does, fn(row)
            expr = sql.SQL("{}({})").format(sql.Identifier(fn.schema, fn.name), sql.Identifier(alias))
            typ = fn.return_type
        else:
            expr = sql.Identifier(alias, f.name)
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
        if f.quantifier:  # like(any).{a*,b*}: op ANY|ALL (array)
            vals = list(v) if isinstance(v, tuple) else [v]
            quant = sql.SQL("ANY" if f.quantifier == "any" else "ALL")
            if op in ("like", "ilike", "match", "imatch"):
                sym = {"like": "LIKE", "ilike": "ILIKE", "match": "~", "imatch": "~*"}[op]
                pats = [x.replace("*", "%") for x in vals] if op in ("like", "ilike") else vals
                cond = sql.SQL("({})::text {} {}(({})::text[])").format(lhs, sql.SQL(sym), quant, self.p(pats))
            else:
                cond = sql.SQL("{} {} {}(({})::{})").format(lhs, sql.SQL(COMPARE[op]), quant, self.p(vals),
                                                           sql.SQL(_safe_type(typ) + "[]"))
        elif op in ("eq", "neq", "gt", "gte", "lt", "lte", "cs", "cd", "ov", "sl", "sr", "nxr", "nxl", "adj"):
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
    def aggregates_allowed(self) -> None:
        if self.cache.config.get("db_aggregates_enabled", "false").lower() not in ("true", "on", "1", "yes"):
            raise RestError(400, "PGRST123", "Use of aggregate functions is not allowed")

    def items(self, rel: Relation, alias: str, items: tuple[Field | Star | Embed, ...], embeds: dict[str, EmbedOptions],
              prefix: str = "", nested: bool = False) -> tuple[list[Item], list[sql.Composable]]:
        """The select list as (expression, label, aggregate?) and the parent conditions !inner embeds add."""
        out: list[Item] = []
        inner_conds: list[sql.Composable] = []
        embedded: set[str] = set()  # labels of embeds (a column of the same name is allowed, as in PostgREST)
        for item in items:
            if isinstance(item, Star):
                out += [Item(sql.Identifier(alias, c), c) for c in rel.columns]
            elif isinstance(item, Field):
                if nested and item.name == "count" and not item.path and item.agg is None \
                        and "count" not in rel.columns:  # messages(count): the embedded rows' count
                    item = Field("", (), None, item.alias, "count", item.cast)
                if item.agg:
                    self.aggregates_allowed()
                    out.append(Item(self.aggregate(rel, alias, item), item.label, True))
                else:
                    expr, _ = self.column(rel, alias, item)
                    out.append(Item(expr, item.label))
            else:
                got, cond = self.embed(rel, alias, item, embeds, prefix)
                if not item.spread and got:
                    if item.label in embedded:
                        # two embeds under one key: PostgREST's statement fails on its duplicate alias, so
                        raise RestError(400, "42712",
                                        f'table name "{rel.name}_{item.label}_1" specified more than once')
                    embedded.add(item.label)
                out += got
                if cond is not None:
                    inner_conds.append(cond)
        return out, inner_conds

    def aggregate(self, rel: Relation, alias: str, f: Field) -> sql.Composable:
        if f.agg == "count" and not f.name:
            expr: sql.Composable = sql.SQL("count(*)")
        else:
            arg, _ = self.column(rel, alias, Field(f.name, f.path, f.cast))
            expr = sql.SQL("{}({})").format(sql.SQL(str(f.agg)), arg)
        if f.agg_cast:
            expr = sql.SQL("({})::{}").format(expr, cast_type(f.agg_cast))
        return expr

    def select_list(self, rel: Relation, alias: str, items: tuple[Field | Star | Embed, ...],
                    embeds: dict[str, EmbedOptions], prefix: str = "", nested: bool = False
                    ) -> tuple[sql.Composable, list[sql.Composable], sql.Composable]:
        """The select list, the parent-level conditions that !inner embeds add, and a GROUP BY clause
        (PostgREST groups by every selected column that is not an aggregate)."""
        got, inner_conds = self.items(rel, alias, items, embeds, prefix, nested)
        if not got:
            return sql.SQL("NULL AS {}").format(sql.Identifier("pgrst_none")), inner_conds, sql.SQL("")
        cols = sql.SQL(", ").join(sql.SQL("{} AS {}").format(i.expr, sql.Identifier(i.label)) for i in got)
        group: sql.Composable = sql.SQL("")
        if any(i.agg for i in got):
            keys = [i.expr for i in got if not i.agg]
            if keys:
                group = sql.SQL(" GROUP BY ") + sql.SQL(", ").join(keys)
        return cols, inner_conds, group

    def link_from(self, link: Link, palias: str, calias: str) -> tuple[sql.Composable, sql.Composable]:
        """The FROM item of an embedded resource and its join condition with the parent row."""
        t = link.target
        if link.function is not None:
            fn = link.function
            return (sql.SQL("{}({}) AS {}").format(sql.Identifier(fn.schema, fn.name), sql.Identifier(palias),
                                                  sql.Identifier(calias)), sql.SQL("true"))
        if link.junction is not None and link.jfk_parent is not None and link.jfk_target is not None:
            jalias = self.alias()
            a, b = link.jfk_parent, link.jfk_target
            on = sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier(jalias, c), sql.Identifier(calias, rc))
                                       for c, rc in zip(b.columns, b.ref_columns, strict=True))
            cond = sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier(jalias, c), sql.Identifier(palias, rc))
                                         for c, rc in zip(a.columns, a.ref_columns, strict=True))
            return (sql.SQL("{} AS {} JOIN {} AS {} ON {}").format(self.ident(t), sql.Identifier(calias),
                                                                  self.ident(link.junction), sql.Identifier(jalias), on),
                    cond)
        fk = link.fk
        assert fk is not None
        if link.forward:  # the parent holds the key
            cond = sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier(calias, rc), sql.Identifier(palias, c))
                                         for c, rc in zip(fk.columns, fk.ref_columns, strict=True))
        else:
            cond = sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier(calias, c), sql.Identifier(palias, rc))
                                         for c, rc in zip(fk.columns, fk.ref_columns, strict=True))
        return sql.SQL("{} AS {}").format(self.ident(t), sql.Identifier(calias)), cond

    def embed(self, parent: Relation, palias: str, e: Embed, embeds: dict[str, EmbedOptions],
              prefix: str) -> tuple[list[Item], sql.Composable | None]:
        try:
            return self._embed(parent, palias, e, embeds, prefix)
        except RestError as err:
            # an unknown column of an embedded relation is named by PostgREST's alias for it (messages_1.sum)
            target = self.cache.relation(self.schema, e.relation)
            if err.code == "42703" and target is not None and err.message.startswith(f"column {target.name}."):
                depth = prefix.count(".") + 1
                err.message = err.message.replace(f"column {target.name}.", f"column {target.name}_{depth}.", 1)
                err.args = (err.message,)
            raise

    def _embed(self, parent: Relation, palias: str, e: Embed, embeds: dict[str, EmbedOptions],
               prefix: str) -> tuple[list[Item], sql.Composable | None]:
        link = resolve(self.cache, self.schema, parent, e)
        target = link.target
        calias = self.alias()
        key = prefix + e.label
        opts = embeds.get(key, EmbedOptions())
        inner = self.inner_exists(parent, palias, e, embeds, prefix) if e.inner else None
        if not e.select:  # rel(): filters the parent (with !inner), leaves no key
            return [], inner
        src, join = self.link_from(link, palias, calias)
        if e.spread:
            got, inner_conds = self.items(target, calias, e.select, embeds, key + ".", nested=True)
            where = sql.SQL(" AND ").join([join, self.where(target, calias, opts.filters), *inner_conds])
            out = []
            for i in got:
                if link.to_one or i.agg:
                    out.append(Item(sql.SQL("(SELECT {} FROM {} WHERE {} LIMIT 1)").format(i.expr, src, where), i.label))
                else:  # a to-many spread: each column an array of the rows' values (PostgREST 13)
                    out.append(Item(sql.SQL("(SELECT json_agg({}) FROM {} WHERE {})").format(i.expr, src, where),
                                    i.label))
            return out, inner
        sel, inner_conds, group = self.select_list(target, calias, e.select, embeds, key + ".", nested=True)
        where = sql.SQL(" AND ").join([join, self.where(target, calias, opts.filters), *inner_conds])
        q = sql.SQL("SELECT {} FROM {} WHERE {}").format(sel, src, where) + group
        if link.to_one:
            expr: sql.Composable = sql.SQL("(SELECT row_to_json(pgrst_e) FROM ({} LIMIT 1) pgrst_e)").format(q)
        else:
            q = q + self.order_by(target, calias, opts.order)
            if opts.limit is not None:
                q = q + sql.SQL(" LIMIT {}").format(self.p(opts.limit))
            if opts.offset:
                q = q + sql.SQL(" OFFSET {}").format(self.p(opts.offset))
            expr = sql.SQL("COALESCE((SELECT json_agg(pgrst_e) FROM ({}) pgrst_e), '[]'::json)").format(q)
        return [Item(expr, e.label)], inner

    def inner_exists(self, parent: Relation, palias: str, e: Embed, embeds: dict[str, EmbedOptions],
                     prefix: str) -> sql.Composable:
        """``!inner``: the parent row is kept only if the embedded resource has a (filtered) row."""
        link = resolve(self.cache, self.schema, parent, e)
        ealias = self.alias()
        src, join = self.link_from(link, palias, ealias)
        opts = embeds.get(prefix + e.label, EmbedOptions())
        conds = [join, self.where(link.target, ealias, opts.filters)]
        for sub in e.select:  # nested !inner embeds and their filters narrow this one too
            if isinstance(sub, Embed) and sub.inner:
                conds.append(self.inner_exists(link.target, ealias, sub, embeds, prefix + e.label + "."))
        return sql.SQL("EXISTS (SELECT 1 FROM {} WHERE {})").format(src, sql.SQL(" AND ").join(conds))

    # -- statements ---------------------------------------------------------------------------------------
    def read(self, rel: Relation, spec: ReadSpec, count: bool, single_row: bool = False,
             source: sql.Composable | None = None, strip_nulls: bool = False) -> sql.Composed:
        """SELECT total, page count, body (JSON text) for a table or view, or a function's rows (``source``)."""
        src = source if source is not None else self.ident(rel)
        a = self.alias()
        total: sql.Composable = sql.SQL("NULL::bigint")
        if count:
            ca = self.alias()
            total = sql.SQL("(SELECT count(*) FROM {} AS {} WHERE {})").format(
                src, sql.Identifier(ca), self._where_with_inner(rel, ca, spec))
        sel, inner, group = self.select_list(rel, a, spec.select, spec.embeds)
        where = sql.SQL(" AND ").join([self.where(rel, a, spec.filters), *inner])
        q = sql.SQL("SELECT {} FROM {} AS {} WHERE {}").format(sel, src, sql.Identifier(a), where) + group
        q = q + self.order_by(rel, a, spec.order)
        if spec.limit is not None:
            q = q + sql.SQL(" LIMIT {}").format(self.p(spec.limit))
        if spec.offset:
            q = q + sql.SQL(" OFFSET {}").format(self.p(spec.offset))
        return self._wrap(total, q, single_row, strip_nulls)

    def planned_count(self, rel: Relation, spec: ReadSpec) -> sql.Composed:
        """``Prefer: count=planned``: the planner's row estimate for the filtered relation, as PostgREST."""
        ca = self.alias()
        return sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {} AS {} WHERE {}").format(
            self.ident(rel), sql.Identifier(ca), self._where_with_inner(rel, ca, spec))

    def _where_with_inner(self, rel: Relation, alias: str, spec: ReadSpec) -> sql.Composable:
        conds = [self.where(rel, alias, spec.filters)]
        for item in spec.select:
            if isinstance(item, Embed) and item.inner:
                conds.append(self.inner_exists(rel, alias, item, spec.embeds, ""))
        return sql.SQL(" AND ").join(conds)

    @staticmethod
    def _wrap(total: sql.Composable, q: sql.Composable, single_row: bool, strip_nulls: bool = False,
              extra: sql.Composable | None = None) -> sql.Composed:
        row = sql.SQL("json_strip_nulls(row_to_json(pgrst_r))") if strip_nulls else sql.SQL("pgrst_r")
        body = sql.SQL("coalesce((json_agg({}) -> 0)::text, 'null')").format(row) if single_row \
            else sql.SQL("coalesce(json_agg({}), '[]'::json)::text").format(row)
        return sql.SQL("SELECT {} AS total, count(pgrst_r) AS n, {} AS body{} FROM ({}) pgrst_r").format(
            total, body, extra if extra is not None else sql.SQL(""), q)

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
               resolution: str | None, returning: bool, missing_default: bool = False,
               mark_inserted: bool = False) -> sql.Composed:
        a = self.alias()
        collist = sql.SQL(", ").join(sql.Identifier(c) for c in cols)
        if missing_default:  # a key absent from an object takes the column's default, not NULL
            # each default is evaluated for every row, given or not (PostgREST's statement does the same, so a
            # sequence advances as it does there)
            picks_list: list[sql.Composable] = []
            defaults: list[sql.Composable] = []
            for i, c in enumerate(cols):
                default = rel.columns[c].default
                defaults.append(sql.SQL("({})::{} AS {}").format(sql.SQL(default or "NULL"),
                                                                 sql.SQL(_safe_type(rel.columns[c].type)),
                                                                 sql.Identifier(f"pgrst_d{i}")))
                picks_list.append(sql.SQL(
                    "CASE WHEN pgrst_e ? {} THEN (jsonb_populate_record(NULL::{}, pgrst_e)).{} ELSE pgrst_x.{} END"
                ).format(sql.Literal(c), self.ident(rel), sql.Identifier(c), sql.Identifier(f"pgrst_d{i}")))
            src = sql.SQL("SELECT {} FROM (SELECT pgrst_e, {} FROM jsonb_array_elements({}::jsonb) pgrst_e) pgrst_x").format(
                sql.SQL(", ").join(picks_list), sql.SQL(", ").join(defaults), self.p(json.dumps(rows)))
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
        if returning and mark_inserted:  # xmax is 0 for a row this statement inserted, not updated
            stmt = stmt + sql.SQL(" RETURNING {}.*, ({}.xmax = 0) AS pgrst_inserted").format(
                sql.Identifier(a), sql.Identifier(a))
        elif returning:
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

    def returned(self, rel: Relation, write: sql.Composable, spec: ReadSpec, single_row: bool, upsert: bool = False,
                 strip_nulls: bool = False) -> sql.Composed:
        """Body of a write's returned rows, shaped by ``select`` (embedding works on them too)."""
        a = self.alias()
        sel, _, group = self.select_list(rel, a, spec.select, spec.embeds)
        q = sql.SQL("SELECT {} FROM pgrst_source AS {}").format(sel, sql.Identifier(a)) + group
        extra = sql.SQL(", (SELECT count(*) FILTER (WHERE pgrst_inserted) FROM pgrst_source) AS inserted") \
            if upsert else None
        return sql.SQL("WITH pgrst_source AS ({}) ").format(write) + self._wrap(sql.SQL("NULL::bigint"), q, single_row,
                                                                                 strip_nulls, extra)

    def call(self, fn: Function, args: dict[str, Any]) -> sql.Composable:
        """``schema.fn(a => $1::type, ...)``: each value bound, row-typed ones built from their JSON object."""
        named = []
        comp = fn.arg_composite or (False,) * len(fn.arg_names)
        for name, typ, is_row in zip(fn.arg_names, fn.arg_types, comp, strict=True):
            if name not in args:
                continue
            v = args[name]
            if is_row and isinstance(v, dict):
                value: sql.Composable = sql.SQL("json_populate_record(NULL::{}, {}::json)").format(
                    sql.SQL(_safe_type(typ)), self.p(json.dumps(v)))
            elif isinstance(v, list) and typ.endswith("[]") and typ not in ("json[]", "jsonb[]"):
                value = sql.SQL("({})::{}").format(self.p([None if x is None else _text(x) for x in v]),
                                                  sql.SQL(_safe_type(typ)))
            else:
                value = self._typed(None if v is None else _text(v), typ)
            named.append(sql.SQL("{} => {}").format(sql.Identifier(name), value) if name else value)
        return sql.SQL("{}({})").format(sql.Identifier(fn.schema, fn.name), sql.SQL(", ").join(named))

    def result_relation(self, fn: Function) -> Relation | None:
        """The columns a function's rows have: its return table's or view's, or its OUT / TABLE columns."""
        if fn.return_rel is not None:
            rel = self.cache.relations.get(fn.return_rel)
            if rel is not None:
                return rel
        if fn.out_columns:
            return Relation(fn.schema, fn.name, "f", {n: Column(n, t, True, False) for n, t in fn.out_columns})
        return None

    def rpc(self, fn: Function, args: dict[str, Any], spec: ReadSpec, single_row: bool, count: bool = False,
            strip_nulls: bool = False) -> sql.Composed:
        call = self.call(fn, args)
        if fn.returns_void:
            return sql.SQL("SELECT NULL::bigint AS total, 0 AS n, NULL::text AS body FROM (SELECT {}) pgrst_v").format(call)
        rel = self.result_relation(fn) if fn.returns_composite else None
        if rel is not None:  # rows: select, filters, embedding, order, count as on a table
            return self.read(rel, spec, count, single_row or not fn.returns_set, source=call, strip_nulls=strip_nulls)
        if not fn.returns_set and not fn.returns_composite:
            one = sql.SQL("1::bigint" if count else "NULL::bigint")
            return sql.SQL("SELECT {} AS total, 1 AS n, to_json({})::text AS body").format(one, call)
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
        total = sql.SQL("(SELECT count(*) FROM {} AS pgrst_c)").format(call) if count else sql.SQL("NULL::bigint")
        if fn.returns_composite:
            return self._wrap(total, q, single_row, strip_nulls)
        return sql.SQL("SELECT {} AS total, count(*) AS n, coalesce(json_agg(pgrst_r.v), '[]'::json)::text"
                       " AS body FROM ({}) pgrst_r").format(total, q)

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


def _text(v: Any) -> str:
    """A JSON value as the text PostgreSQL parses for its parameter type."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict | list):
        return json.dumps(v)
    return str(v)


def _safe_type(typ: str) -> str:
    """Catalog type names (format_type output) are safe to splice; anything else is refused."""
    t = typ.strip()
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789_ ()[],.\"")  # "." for a schema-qualified type
    if not t or any(ch.lower() not in allowed for ch in t) or ";" in t or "--" in t:
        raise parse_error(f"unsupported type '{typ}'")
    return t
