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
    unique: tuple[frozenset[str], ...] = ()  # column sets of the primary key and unique indexes

    def is_unique(self, cols: tuple[str, ...]) -> bool:
        return any(u <= set(cols) for u in self.unique)


UNNAMED_TYPES = {"json", "jsonb", "text", "xml", "bytea"}  # a single unnamed parameter of these is callable


@dataclass(frozen=True)
class Function:
    schema: str
    name: str
    arg_names: tuple[str, ...]  # "" for PostgREST's single unnamed parameter
    arg_types: tuple[str, ...]
    n_defaults: int
    returns_set: bool
    return_type: str
    returns_composite: bool
    volatility: str
    return_rel: tuple[str, str] | None = None  # the table or view whose row type it returns
    first_arg_rel: tuple[str, str] | None = None  # the relation whose row type its first argument is
    out_columns: tuple[tuple[str, str], ...] = ()  # RETURNS TABLE (...) / OUT parameters: (name, type)
    returns_void: bool = False
    arg_composite: tuple[bool, ...] = ()  # per argument: a row type, passed from a JSON object
    rows: float = 1000.0  # the planner's ROWS estimate: a set-returning ROWS 1 function embeds as an object

    @property
    def to_one(self) -> bool:
        return not self.returns_set or self.rows == 1

    @property
    def required(self) -> tuple[str, ...]:
        return self.arg_names[: len(self.arg_names) - self.n_defaults]

    def signature(self) -> str:
        """As PostgREST names an overload in PGRST203: ``public.f(a => int4, b => text)``."""
        return f"{self.schema}.{self.name}(" + ", ".join(
            f"{n} => {t}" for n, t in zip(self.arg_names, self.arg_types, strict=True)) + ")"

    @property
    def computed_on(self) -> tuple[str, str] | None:
        """The relation this function extends, as a computed field or computed relationship: one argument
        (or one required) of that relation's row type."""
        if self.first_arg_rel is None or len(self.required) > 1 or not self.arg_names:
            return None
        return self.first_arg_rel


RELATIONS_SQL = """
select n.nspname, c.relname, c.relkind,
       coalesce(array_agg(a.attname::text order by a.attnum) filter (where a.attnum > 0), '{}'),
       coalesce(array_agg(format_type(a.atttypid, a.atttypmod) order by a.attnum) filter (where a.attnum > 0), '{}'),
       coalesce(array_agg(not a.attnotnull order by a.attnum) filter (where a.attnum > 0), '{}'),
       coalesce(array_agg(a.atthasdef order by a.attnum) filter (where a.attnum > 0), '{}'),
       coalesce(array_agg(coalesce(pg_get_expr(d.adbin, d.adrelid),
                                   case when a.attidentity <> '' then format('nextval(%%L::regclass)',
                                       pg_get_serial_sequence(format('%%I.%%I', n.nspname, c.relname), a.attname))
                                   end) order by a.attnum) filter (where a.attnum > 0), '{}'),
       coalesce((select array_agg(pa.attname::text order by array_position(ix.indkey::int2[], pa.attnum))
                 from pg_index ix join pg_attribute pa on pa.attrelid = ix.indrelid and pa.attnum = any(ix.indkey)
                 where ix.indrelid = c.oid and ix.indisprimary), '{}'),
       coalesce((select array_agg(array_to_string(array(
                     select pa.attname::text from pg_attribute pa
                     where pa.attrelid = ix.indrelid and pa.attnum = any(ix.indkey)), chr(31)))
                 from pg_index ix where ix.indrelid = c.oid and ix.indisunique and ix.indpred is null), '{}')
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
       p.provolatile, coalesce(p.proargmodes::text[], '{}'),
       rn.nspname, rc.relname,
       (select array[an.nspname::text, ac.relname::text] from pg_type at join pg_class ac on ac.oid = at.typrelid
        join pg_namespace an on an.oid = ac.relnamespace where at.oid = p.proargtypes[0]),
       coalesce(array(select format_type(x, null) from unnest(p.proallargtypes) x), '{}'),
       p.prorettype = 'void'::regtype,
       array(select coalesce((select at.typtype = 'c' from pg_type at where at.oid = x), false)
             from unnest(p.proargtypes) x),
       p.prorows
from pg_proc p join pg_namespace n on n.oid = p.pronamespace join pg_type t on t.oid = p.prorettype
left join pg_class rc on rc.oid = t.typrelid and t.typrelid <> 0
left join pg_namespace rn on rn.oid = rc.relnamespace
where n.nspname = any(%s) and p.prokind = 'f'
order by p.oid
"""

# the base-table columns each view reads (its rewrite rule's dependencies); information_schema's
# view_column_usage would show only the views the current role owns
VIEW_COLUMNS_SQL = """
select distinct vn.nspname, v.relname, tn.nspname, t.relname, a.attname
from pg_rewrite r
join pg_depend d on d.objid = r.oid and d.classid = 'pg_rewrite'::regclass and d.refclassid = 'pg_class'::regclass
join pg_class v on v.oid = r.ev_class join pg_namespace vn on vn.oid = v.relnamespace
join pg_class t on t.oid = d.refobjid join pg_namespace tn on tn.oid = t.relnamespace
join pg_attribute a on a.attrelid = t.oid and a.attnum = d.refobjsubid
where v.relkind in ('v', 'm') and t.oid <> v.oid and d.refobjsubid > 0 and vn.nspname = any(%s)
"""

# PostgREST's in-database configuration: pgrst.* settings on the authenticator role
ROLE_SETTINGS_SQL = """
select split_part(kv, '=', 1), substr(kv, strpos(kv, '=') + 1)
from pg_db_role_setting s, unnest(s.setconfig) kv
where s.setrole = (select oid from pg_roles where rolname = 'authenticator') and kv like 'pgrst.%'
"""


class SchemaCache:
    def __init__(self, schemas: tuple[str, ...]) -> None:
        self.schemas = schemas
        self.relations: dict[tuple[str, str], Relation] = {}
        self.fks: list[ForeignKey] = []
        self.functions: dict[tuple[str, str], list[Function]] = {}
        self.computed: dict[tuple[str, str], dict[str, Function]] = {}  # relation -> name -> function
        self.config: dict[str, str] = {}  # pgrst.* role settings, e.g. db_aggregates_enabled
        self._loaded_at = 0.0
        self._generation = -1

    async def load(self, conn: AsyncConnection) -> None:
        schemas = list(self.schemas)
        rels: dict[tuple[str, str], Relation] = {}
        for nsp, name, kind, cols, types, nullable, hasdef, defaults, pk, uniq in await (
                await conn.execute(RELATIONS_SQL, (schemas,))).fetchall():
            rel = Relation(nsp, name, kind, pk=tuple(pk),
                           unique=tuple(frozenset(u.split(chr(31))) for u in uniq) + ((frozenset(pk),) if pk else ()))
            for c, t, nl, d, expr in zip(cols, types, nullable, hasdef, defaults, strict=True):
                rel.columns[c] = Column(c, t, nl, d, expr)
            rels[(nsp, name)] = rel
        fks = [ForeignKey(r[0], r[1], r[2], tuple(r[3]), r[4], r[5], tuple(r[6]))
               for r in await (await conn.execute(FKS_SQL, (schemas, schemas))).fetchall()]
        fks += _view_fks(rels, fks, await (await conn.execute(VIEW_COLUMNS_SQL, (schemas,))).fetchall())
        funcs: dict[tuple[str, str], list[Function]] = {}
        computed: dict[tuple[str, str], dict[str, Function]] = {}
        for (nsp, name, argnames, argtypes, ndef, retset, rettype, composite, vol, modes, rnsp, rname, arel,
             alltypes, void, argcomp, prorows) in await (await conn.execute(FUNCS_SQL, (schemas,))).fetchall():
            if "v" in modes:
                continue  # VARIADIC arguments are not served through REST here
            names = list(argnames) + [""] * (len(modes or argtypes) - len(argnames))
            in_names = [n for n, m in zip(names, modes, strict=False) if m in ("i", "b")] if modes else names
            outs = tuple((n, t) for n, t, m in zip(names, alltypes, modes, strict=False) if m in ("o", "b", "t"))
            if len(in_names) != len(argtypes):
                continue
            f = Function(nsp, name, tuple(in_names), tuple(argtypes), ndef, retset, rettype, bool(composite), vol,
                         (rnsp, rname) if rname else None, (arel[0], arel[1]) if arel else None, outs, bool(void),
                         tuple(argcomp), float(prorows))
            if f.computed_on is not None and f.computed_on in rels and not f.returns_void:
                computed.setdefault(f.computed_on, {}).setdefault(name, f)
            # PostgREST serves an unnamed parameter only as the single one, of a type a body can carry
            if any(not n for n in in_names) and (len(in_names) != 1 or argtypes[0] not in UNNAMED_TYPES):
                continue
            funcs.setdefault((nsp, name), []).append(f)
        config = {k.removeprefix("pgrst.").replace("-", "_"): v for k, v in
                  await (await conn.execute(ROLE_SETTINGS_SQL)).fetchall()}
        self.relations, self.fks, self.functions, self.computed, self.config = rels, fks, funcs, computed, config
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

    def callable_names(self, schema: str) -> list[str]:
        return sorted(n for (s, n) in self.functions if s == schema)

    def function(self, schema: str, name: str) -> list[Function]:
        return self.functions.get((schema, name), [])

    def relationships(self, parent: Relation, target: str) -> list[tuple[ForeignKey, bool]]:
        """Foreign keys joining ``parent`` to the relation named ``target``: (fk, parent_is_referencing)."""
        out = []
        for fk in self.fks:
            if (fk.schema, fk.table) == (parent.schema, parent.name) and fk.ref_table == target:
                out.append((fk, True))  # many-to-one: parent holds the key
            if (fk.ref_schema, fk.ref_table) == (parent.schema, parent.name) and fk.table == target:
                out.append((fk, False))  # one-to-many: target holds the key
        return out

    def junctions(self, parent: Relation, target: str) -> list[tuple[Relation, ForeignKey, ForeignKey]]:
        """Many-to-many: a table whose foreign keys reach ``parent`` and ``target`` with both keys' columns
        inside its primary key (PostgREST's junction rule): (junction, fk to parent, fk to target)."""
        out = []
        for jrel in self.relations.values():
            if jrel.kind not in ("r", "p") or not jrel.pk:
                continue
            mine = [fk for fk in self.fks if (fk.schema, fk.table) == (jrel.schema, jrel.name)
                    and set(fk.columns) <= set(jrel.pk)]
            for a in mine:
                if (a.ref_schema, a.ref_table) != (parent.schema, parent.name):
                    continue
                for b in mine:
                    if b is not a and b.ref_table == target and b.ref_schema == parent.schema:
                        out.append((jrel, a, b))
        return out


def _view_fks(rels: dict[tuple[str, str], Relation], fks: list[ForeignKey],
              usage: list[tuple[str, str, str, str, str]]) -> list[ForeignKey]:
    """Foreign keys as seen through views: a view that shows a table's key columns under the same names
    takes part in that table's relationships (PostgREST follows view definitions the same way)."""
    shows: dict[tuple[str, str], dict[tuple[str, str], set[str]]] = {}
    for vs, vn, ts, tn, col in usage:
        view = rels.get((vs, vn))
        if view is not None and col in view.columns:
            shows.setdefault((ts, tn), {}).setdefault((vs, vn), set()).add(col)
    out: list[ForeignKey] = []
    for fk in fks:
        for (vs, vn), cols in shows.get((fk.schema, fk.table), {}).items():
            if set(fk.columns) <= cols:
                out.append(ForeignKey(fk.name, vs, vn, fk.columns, fk.ref_schema, fk.ref_table, fk.ref_columns))
        for (vs, vn), cols in shows.get((fk.ref_schema, fk.ref_table), {}).items():
            if set(fk.ref_columns) <= cols:
                out.append(ForeignKey(fk.name, fk.schema, fk.table, fk.columns, vs, vn, fk.ref_columns))
    return out
