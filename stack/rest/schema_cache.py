"""What PostgREST calls the schema cache: relations, columns, keys, foreign keys, functions.

Every identifier a request names is looked up here before any SQL is built, so nothing
the caller typed reaches PostgreSQL as an identifier unless the catalog has it. The cache
loads lazily and reloads when a lookup misses (at most once a second), so tables
created at run time appear without a restart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from psycopg import AsyncConnection

__all__ = ["Column", "ForeignKey", "Function", "Relation", "SchemaCache"]


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type(): usable in a cast, e.g. "numeric(10,2)", "uuid", "text[]"
    nullable: bool
    has_default: bool
    default: str | None = None  # the catalog's default expression (pg_get_expr), for Prefer: missing=default


@dataclass(frozen=True)
class ForeignKey:
    name: str
    schema: str
    table: str  # the referencing table
    columns: tuple[str, ...]
    ref_schema: str
    ref_table: str
    ref_columns: tuple[str, ...]


@dataclass
class Relation:
    schema: str
    name: str
    kind: str  # r table, v view, m matview, p partitioned, f foreign
    columns: dict[str, Column] = field(default_factory=dict)
    pk: tuple[str, ...] = ()


@dataclass(frozen=True)
class Function:
    schema: str
    name: str
    arg_names: tuple[str, ...]
    arg_types: tuple[str, ...]
    n_defaults: int
    returns_set: bool
    return_type: str
    returns_composite: bool
    volatility: str

    @property
    def required(self) -> tuple[str, ...]:
        return self.arg_names[: len(self.arg_names) - self.n_defaults]


RELATIONS_SQL = """
select n.nspname, c.relname, c.relkind,
       coalesce(array_agg(a.attname::text order by a.attnum) filter (where a.attnum > 0), '{}'),
       coalesce(array_agg(format_type(a.atttypid, a.atttypmod) order by a.attnum) filter (where a.attnum > 0), '{}'),
       coalesce(array_agg(not a.attnotnull order by a.attnum) filter (where a.attnum > 0), '{}'),
       coalesce(array_agg(a.atthasdef order by a.attnum) filter (where a.attnum > 0), '{}'),
       coalesce(array_agg(pg_get_expr(d.adbin, d.adrelid) order by a.attnum) filter (where a.attnum > 0), '{}'),
       coalesce((select array_agg(pa.attname::text order by array_position(ix.indkey::int2[], pa.attnum))
                 from pg_index ix join pg_attribute pa on pa.attrelid = ix.indrelid and pa.attnum = any(ix.indkey)
                 where ix.indrelid = c.oid and ix.indisprimary), '{}')
from pg_class c join pg_namespace n on n.oid = c.relnamespace
left join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
left join pg_attrdef d on d.adrelid = c.oid and d.adnum = a.attnum
where n.nspname = any(%s) and c.relkind in ('r', 'v', 'm', 'p', 'f')
group by n.nspname, c.relname, c.relkind, c.oid
"""

FKS_SQL = """
select con.conname, n.nspname, c.relname,
       array(select a.attname::text from unnest(con.conkey) with ordinality k(attnum, i)
             join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.attnum order by k.i),
       fn.nspname, fc.relname,
       array(select a.attname::text from unnest(con.confkey) with ordinality k(attnum, i)
             join pg_attribute a on a.attrelid = con.confrelid and a.attnum = k.attnum order by k.i)
from pg_constraint con
join pg_class c on c.oid = con.conrelid join pg_namespace n on n.oid = c.relnamespace
join pg_class fc on fc.oid = con.confrelid join pg_namespace fn on fn.oid = fc.relnamespace
where con.contype = 'f' and (n.nspname = any(%s) or fn.nspname = any(%s))
"""

FUNCS_SQL = """
select n.nspname, p.proname, coalesce(p.proargnames, '{}'), p.proargtypes::regtype[]::text[], p.pronargdefaults,
       p.proretset, format_type(p.prorettype, null), t.typtype = 'c' or p.prorettype = 'record'::regtype,
       p.provolatile, coalesce(p.proargmodes::text[], '{}')
from pg_proc p join pg_namespace n on n.oid = p.pronamespace join pg_type t on t.oid = p.prorettype
where n.nspname = any(%s) and p.prokind = 'f'
"""


class SchemaCache:
    def __init__(self, schemas: tuple[str, ...]) -> None:
        self.schemas = schemas
        self.relations: dict[tuple[str, str], Relation] = {}
        self.fks: list[ForeignKey] = []
        self.functions: dict[tuple[str, str], list[Function]] = {}
        self._loaded_at = 0.0
        self._generation = -1

    async def load(self, conn: AsyncConnection) -> None:
        schemas = list(self.schemas)
        rels: dict[tuple[str, str], Relation] = {}
        for nsp, name, kind, cols, types, nullable, hasdef, defaults, pk in await (
                await conn.execute(RELATIONS_SQL, (schemas,))).fetchall():
            rel = Relation(nsp, name, kind, pk=tuple(pk))
            for c, t, nl, d, expr in zip(cols, types, nullable, hasdef, defaults, strict=True):
                rel.columns[c] = Column(c, t, nl, d, expr)
            rels[(nsp, name)] = rel
        fks = [ForeignKey(r[0], r[1], r[2], tuple(r[3]), r[4], r[5], tuple(r[6]))
               for r in await (await conn.execute(FKS_SQL, (schemas, schemas))).fetchall()]
        funcs: dict[tuple[str, str], list[Function]] = {}
        for nsp, name, argnames, argtypes, ndef, retset, rettype, composite, vol, modes in await (
                await conn.execute(FUNCS_SQL, (schemas,))).fetchall():
            if any(m in ("b", "v") for m in modes):
                continue  # INOUT and VARIADIC arguments are not served through REST here
            in_names = [n for n, m in zip(argnames, modes, strict=False) if m == "i"] if modes else list(argnames)
            if len(in_names) != len(argtypes) or any(not n for n in in_names):
                continue  # unnamed arguments cannot be called with named JSON keys
            funcs.setdefault((nsp, name), []).append(
                Function(nsp, name, tuple(in_names), tuple(argtypes), ndef, retset, rettype, bool(composite), vol))
        self.relations, self.fks, self.functions = rels, fks, funcs
        self._loaded_at = time.monotonic()

    async def ensure(self, conn: AsyncConnection, found: bool, generation: int | None = None) -> bool:
        """Reload when DDL ran since the last load (``generation`` from ``stack.ddl.DdlWatch``), when never
        loaded, or, without a DDL watch, when a lookup missed and the cache is older than a second."""
        stale = generation is not None and generation != self._generation
        if self._loaded_at == 0 or stale or (generation is None and not found
                                              and time.monotonic() - self._loaded_at > 1.0):
            await self.load(conn)
            if generation is not None:
                self._generation = generation
            return True
        return False

    def relation(self, schema: str, name: str) -> Relation | None:
        return self.relations.get((schema, name))

    def function(self, schema: str, name: str) -> list[Function]:
        return self.functions.get((schema, name), [])

    def relationships(self, parent: Relation, target: str) -> list[tuple[ForeignKey, bool]]:
        """Foreign keys joining ``parent`` to the relation named ``target``: (fk, parent_is_referencing)."""
        out = []
        for fk in self.fks:
            if (fk.schema, fk.table) == (parent.schema, parent.name) and fk.ref_table == target:
                out.append((fk, True))  # many-to-one: parent holds the key
            elif (fk.ref_schema, fk.ref_table) == (parent.schema, parent.name) and fk.table == target:
                out.append((fk, False))  # one-to-many: target holds the key
        return out
