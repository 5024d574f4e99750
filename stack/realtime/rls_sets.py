"""Set-based RLS: one query decides, for every subscriber identity of a change, what the table's SELECT
policies let it see.

The per-identity checker (``realtime.zora_chk_<oid>``, stack/sql/001_realtime.sql) switches role and
claims for each distinct identity and asks PostgreSQL's own RLS, so its cost grows with the number of
identities. Here the table's SELECT policies (``pg_policy``: FOR SELECT and FOR ALL) are rewritten once
per table so that ``auth.uid()``, ``auth.jwt()``, ``auth.role()``, ``auth.email()`` and
``current_setting('request.jwt.claims')`` read the claims from a set of rows, one per identity, and a
generated function (``realtime.zora_set_<oid>_<hash>``) evaluates them over that set joined with the row,
combined as PostgreSQL combines them: the permissive policies that apply to the role OR'd, the
restrictive ones AND'd, none that applies means nothing is visible; a role that bypasses RLS (superuser,
BYPASSRLS, owner without FORCE) sees the row.

A policy is rewritten only when that provably means the same thing (decided on its stored parse tree,
``polqual``, not on its text): every node is of a known kind; every function is a non-SECURITY-DEFINER
built-in that is immutable, or stable and independent of the current role and settings, or one of the
auth helpers with exactly the bodies of stack/sql/000_supabase_base.sql; ``current_setting`` reads only
``request.jwt.claims``; other tables read in subqueries have no RLS of their own (their policies would
depend on the role) and are plain tables. Otherwise the table stays on the per-identity checker, and the
log says so once per table. What the rewrite cannot know statically is checked per role in the query:
that the endpoint may switch to the role, that the role may select the referenced tables and execute the
functions (the per-identity check would fail on either); identities for which that does not hold are
returned as ``unsure`` and checked one by one. Every policy that applies to an identity is evaluated in
full (no short-circuit between policies), so an error anywhere fails the whole query, and the caller then
asks the per-identity checker: where the two could differ (an error one path skips and the other
reaches), the per-identity answer wins. Errors PostgreSQL's planner raises before any policy runs (it
evaluates stable claim expressions such as ``auth.uid()``'s cast for its estimates) are found per identity
by ``realtime.zora_plan_probe`` (stack/sql/004); such an identity sees nothing (changes.py).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import psycopg
from psycopg import sql

__all__ = ["SetPlan", "plan_table", "rewrite_claims"]

# the auth helpers as stack/sql/000_supabase_base.sql defines them, by name: (prosrc, the same expression
# reading the identity's claims: zora_c.zora_jwt is its claims as jsonb, zora_c.zora_claims as text, the
# zora_l_* variables the legacy per-claim settings, read once per call since they are the session's)
_CLAIMS = "zora_c.zora_claims"
AUTH_HELPERS: dict[str, tuple[str, str]] = {
    "jwt": (
        "select coalesce( nullif(current_setting('request.jwt.claim', true), ''),"
        " nullif(current_setting('request.jwt.claims', true), '') )::jsonb",
        "(coalesce(zora_l_claim::jsonb, zora_c.zora_jwt))",
    ),
    "uid": (
        "select coalesce( nullif(current_setting('request.jwt.claim.sub', true), ''),"
        " (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub') )::uuid",
        "(coalesce(zora_l_sub, zora_c.zora_jwt ->> 'sub')::uuid)",
    ),
    "role": (
        "select coalesce( nullif(current_setting('request.jwt.claim.role', true), ''),"
        " (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role') )::text",
        "(coalesce(zora_l_role, zora_c.zora_jwt ->> 'role')::text)",
    ),
    "email": (
        "select coalesce( nullif(current_setting('request.jwt.claim.email', true), ''),"
        " (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email') )::text",
        "(coalesce(zora_l_email, zora_c.zora_jwt ->> 'email')::text)",
    ),
}
CURRENT_SETTING_OIDS = frozenset({2077, 3294})  # current_setting(text), current_setting(text, boolean)

# parse-tree nodes whose meaning does not depend on who evaluates them (functions are checked separately)
SAFE_NODES = frozenset({
    "VAR", "CONST", "FUNCEXPR", "OPEXPR", "DISTINCTEXPR", "NULLIFEXPR", "SCALARARRAYOPEXPR", "BOOLEXPR",
    "SUBLINK", "RELABELTYPE", "COERCEVIAIO", "ARRAYCOERCEEXPR", "COLLATEEXPR", "CASE", "WHEN", "CASEEXPR",
    "CASEWHEN", "CASETESTEXPR",
    "ARRAYEXPR", "COALESCEEXPR", "MINMAXEXPR", "NULLTEST", "BOOLEANTEST", "SQLVALUEFUNCTION", "QUERY",
    "RANGETBLENTRY", "ALIAS", "FROMEXPR", "RANGETBLREF", "JOINEXPR", "TARGETENTRY", "SORTGROUPCLAUSE",
    "AGGREF", "RANGETBLFUNCTION", "SUBSCRIPTINGREF", "ARRAY", "COALESCE", "MINMAX", "COLLATE",
})
# SQLValueFunction ops that do not read the role: CURRENT_DATE ... LOCALTIMESTAMP(n), CURRENT_CATALOG, CURRENT_SCHEMA
SAFE_SQLVALUE_OPS = frozenset({0, 1, 2, 3, 4, 5, 6, 7, 8, 13, 14})
SAFE_RTEKINDS = frozenset({0, 1, 2, 3, 5})  # relation, subquery, join, function, values
# stable built-ins are safe unless they read the role, privileges, settings or per-session state
_UNSAFE_STABLE = re.compile(r"^(pg_|has_|current_|session_|txid|to_reg|set_config|row_security|lo_|inet_)|"
                            r"privilege|setting|role|user")
_NODE = re.compile(r"(?<!\\)\{([A-Z_]+)")


@dataclass(frozen=True)
class SetPlan:
    function: str | None  # realtime."zora_set_<oid>_<hash>", or None: the per-identity checker decides
    reason: str = ""  # why not, for the log


@dataclass
class _Policy:
    name: str
    permissive: bool
    roles: list[int]  # 0: PUBLIC
    text: str | None  # pg_get_expr under an empty search_path (None: no USING expression)
    tree: str | None


def _ints(pattern: str, tree: str) -> set[int]:
    return {int(x) for x in re.findall(pattern, tree)}


def rewrite_claims(text: str, auth_names: dict[str, str]) -> tuple[str, dict[str, int]]:
    """Replace, outside string literals and quoted identifiers, each call of an auth helper and each
    ``current_setting('request.jwt.claims'...)`` by its per-identity expression; return the new text and
    how many of each were replaced (the caller compares these counts with the parse tree)."""
    out: list[str] = []
    counts: dict[str, int] = {"current_setting": 0, "other_current_setting": 0}
    helper = re.compile(r"(auth)\.(" + "|".join(auth_names) + r")\(\)") if auth_names else None
    setting = re.compile(r"(?:pg_catalog\.)?current_setting\('request\.jwt\.claims'(?:::text)?(?:, (?:true|false))?\)")
    any_setting = re.compile(r"(?:pg_catalog\.)?current_setting\(")
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "'\"":  # a literal or a quoted identifier: copied as is (doubled quotes stay inside)
            j = i + 1
            while j < n:
                if text[j] == ch:
                    if j + 1 < n and text[j + 1] == ch:
                        j += 2
                        continue
                    break
                j += 1
            out.append(text[i:j + 1])
            i = j + 1
            continue
        if helper is not None and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] in "_.$\"")):
            m = helper.match(text, i)
            if m:
                counts[m.group(2)] = counts.get(m.group(2), 0) + 1
                out.append(auth_names[m.group(2)])
                i = m.end()
                continue
        if i == 0 or not (text[i - 1].isalnum() or text[i - 1] in "_$\""):
            m = setting.match(text, i)
            if m:
                counts["current_setting"] += 1
                out.append(_CLAIMS)
                i = m.end()
                continue
            if any_setting.match(text, i):
                counts["other_current_setting"] += 1
        out.append(ch)
        i += 1
    return "".join(out), counts


async def _policies(conn: psycopg.AsyncConnection, oid: int) -> list[_Policy]:
    async with conn.transaction():
        await conn.execute("set local search_path = ''")  # every name the deparser prints is then qualified
        cur = await conn.execute(
            "select polname::text, polpermissive, polroles::oid[]::int8[], pg_catalog.pg_get_expr(polqual, polrelid),"
            " polqual::text from pg_catalog.pg_policy where polrelid = %s and polcmd in ('r', '*') order by polname",
            (oid,))
        rows = await cur.fetchall()
    return [_Policy(r[0], bool(r[1]), [int(x) for x in r[2]], r[3], r[4]) for r in rows]


async def _judge(conn: psycopg.AsyncConnection, oid: int, policies: list[_Policy]
                 ) -> tuple[str, dict[int, str], list[int], list[int]]:
    """'' if safe, else why not; the auth helpers used (oid -> name); the functions and relations the
    policies reference (for the per-role privilege checks)."""
    funcs: set[int] = set()
    opnos: set[int] = set()
    rels: set[int] = set()
    for p in policies:
        if p.text is None or p.tree is None:
            return f"policy {p.name} has no USING expression", {}, [], []
        if "zora_" in p.text:
            return f"policy {p.name} uses a name starting with zora_", {}, [], []
        nodes = set(_NODE.findall(p.tree))
        if nodes - SAFE_NODES:
            return f"policy {p.name} uses {', '.join(sorted(nodes - SAFE_NODES))}", {}, [], []
        if _ints(r":op (\d+)", p.tree) - SAFE_SQLVALUE_OPS and "SQLVALUEFUNCTION" in nodes:
            return f"policy {p.name} reads the current role (CURRENT_USER and the like)", {}, [], []
        if _ints(r":rtekind (\d+)", p.tree) - SAFE_RTEKINDS:
            return f"policy {p.name} uses a CTE or table function", {}, [], []
        funcs |= _ints(r":(?:funcid|opfuncid|aggfnoid|hashfuncid|negfuncid) (\d+)", p.tree)
        opnos |= _ints(r":(?:opno|eqop|sortop) (\d+)", p.tree)
        rels |= _ints(r":relid (\d+)", p.tree)
    if opnos:
        cur = await conn.execute("select oprcode::oid::int8 from pg_catalog.pg_operator where oid = any(%s)",
                                 (sorted(opnos),))
        funcs |= {int(r[0]) for r in await cur.fetchall()}
    funcs.discard(0)
    cur = await conn.execute(
        "select p.oid::int8, n.nspname::text, p.proname::text, p.provolatile::text, p.prosecdef, p.prosrc,"
        " p.pronargs from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace"
        " where p.oid = any(%s)", (sorted(funcs),))
    auth: dict[int, str] = {}
    for foid, nsp, name, vol, secdef, src, nargs in await cur.fetchall():
        label = f"{nsp}.{name}()"
        if secdef:
            return f"{label} is SECURITY DEFINER", {}, [], []
        if nsp == "auth" and name in AUTH_HELPERS and nargs == 0:
            if " ".join(str(src).split()) != AUTH_HELPERS[name][0]:
                return f"{label} is not the stack's definition", {}, [], []
            auth[int(foid)] = name
        elif nsp != "pg_catalog":
            return f"{label} may read the claims or the role", {}, [], []
        elif int(foid) in CURRENT_SETTING_OIDS:
            pass  # the text rewrite must account for every call (checked below)
        elif vol == "v":
            return f"{label} is volatile", {}, [], []
        elif vol == "s" and _UNSAFE_STABLE.search(str(name)):
            return f"{label} may depend on the current role or settings", {}, [], []
    cur = await conn.execute("select a.attrelid::regclass::text from pg_catalog.pg_attribute a where a.attrelid = any(%s)"
                             " and a.attname::text like 'zora\\_%%' limit 1", (sorted(rels | {oid}),))
    clash = await cur.fetchone()
    if clash:  # the generated query's own names start with zora_
        return f"{clash[0]} has a column whose name starts with zora_", {}, [], []
    rels.discard(oid)
    if oid in _ints(r":relid (\d+)", " ".join(p.tree or "" for p in policies)):
        return "a policy reads its own table (its RLS would apply again)", {}, [], []
    if rels:
        cur = await conn.execute(
            "select c.oid::int8, c.oid::regclass::text, c.relkind::text, c.relrowsecurity from pg_catalog.pg_class c"
            " where c.oid = any(%s)", (sorted(rels),))
        for _roid, rname, kind, rls in await cur.fetchall():
            if kind not in ("r", "p"):
                return f"a policy reads {rname}, which is not a plain table", {}, [], []
            if rls:
                return f"a policy reads {rname}, whose own RLS depends on the role", {}, [], []
    return "", auth, sorted(funcs), sorted(rels)


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _count_calls(tree: str, funcid: int) -> int:
    return len(re.findall(rf":funcid {funcid} ", tree))


async def plan_table(conn: psycopg.AsyncConnection, oid: int, entity: str, relname: str, pk: list[str]
                     ) -> SetPlan:
    """Judge the table's SELECT policies and, when they can be rewritten, create the set checker."""
    if not pk:
        return SetPlan(None, "no primary key")
    if relname.startswith("zora_"):
        return SetPlan(None, "the table's name starts with zora_")
    policies = await _policies(conn, oid)
    reason, auth, funcs, rels = await _judge(conn, oid, policies)
    if reason:
        return SetPlan(None, reason)
    replacements = {name: AUTH_HELPERS[name][1] for name in auth.values()}
    exprs: list[str] = []
    for p in policies:
        assert p.text is not None and p.tree is not None  # _judge refused the others
        text, counts = rewrite_claims(p.text, replacements)
        settings = sum(_count_calls(p.tree, f) for f in CURRENT_SETTING_OIDS)
        if counts["other_current_setting"] or counts["current_setting"] != settings:
            return SetPlan(None, f"policy {p.name} reads settings other than request.jwt.claims")
        for foid, name in auth.items():
            if counts.get(name, 0) != _count_calls(p.tree, foid):
                return SetPlan(None, f"policy {p.name}: could not rewrite every call of auth.{name}()")
        exprs.append(text)
    body = _function_body(entity, relname, pk, policies, exprs, auth, funcs, rels)
    digest = hashlib.sha256(body.encode()).hexdigest()[:12]
    name = f"realtime.{sql.Identifier(f'zora_set_{oid}_{digest}').as_string(conn)}"
    await conn.execute(body.replace("@FUNCTION@", name))
    return SetPlan(name)


def _function_body(entity: str, relname: str, pk: list[str], policies: list[_Policy], exprs: list[str],
                   auth: dict[int, str], funcs: list[int], rels: list[int]) -> str:
    alias = sql.Identifier(relname).as_string(None)
    pk_cond = " and ".join(f"{alias}.{sql.Identifier(c).as_string(None)} = zora_r.{sql.Identifier(c).as_string(None)}"
                           for c in pk)
    # per role: may the endpoint become it, may it read the referenced tables and run the functions
    ok = ["pr.oid is not null", "pg_catalog.pg_has_role(session_user, pr.oid, 'MEMBER')"]
    ok += [f"pg_catalog.has_table_privilege(pr.oid, {r}::oid, 'SELECT')" for r in rels]
    ok += [f"pg_catalog.has_function_privilege(pr.oid, {f}::oid, 'EXECUTE')" for f in funcs]
    may = " and ".join(f"pg_catalog.has_column_privilege(pr.oid, {_lit(entity)}::regclass, {_lit(c)}, 'SELECT')"
                       for c in pk)
    bypass = ("(pr.rolsuper or pr.rolbypassrls or (pg_catalog.pg_has_role(pr.oid, zora_t.relowner, 'USAGE')"
              " and not zora_t.relforcerowsecurity))")
    applies, values, permissive, restrictive = [], [], [], []
    for k, (p, expr) in enumerate(zip(policies, exprs, strict=True)):
        cond = "true" if 0 in p.roles else " or ".join(
            f"pg_catalog.pg_has_role(pr.oid, {r}::oid, 'USAGE')" for r in p.roles) or "false"
        applies.append(f"({cond}) as zora_a{k}")
        values.append(f"case when zora_ro.zora_a{k} and not zora_ro.zora_bypass then ({expr}) end as zora_v{k}")
        if p.permissive:
            permissive.append(f"coalesce(zora_e.zora_v{k}, false)")
        else:
            restrictive.append(f"(not zora_ro.zora_a{k} or coalesce(zora_e.zora_v{k}, false))")
    passes = "(" + (" or ".join(permissive) or "false") + ")" + "".join(f" and {r}" for r in restrictive)
    guard = ""
    if auth:
        oids = ",".join(str(o) for o in sorted(auth))
        expect = hashlib.md5(",".join(AUTH_HELPERS[auth[o]][0] for o in sorted(auth)).encode()).hexdigest()
        guard = f"""
    -- an auth helper redefined since this function was made: the per-identity checker decides
    if (select pg_catalog.md5(pg_catalog.string_agg(
            pg_catalog.btrim(pg_catalog.regexp_replace(p.prosrc, '\\s+', ' ', 'g')), ',' order by p.oid))
        from pg_catalog.pg_proc p where p.oid = any('{{{oids}}}'::oid[]) and not p.prosecdef)
        is distinct from '{expect}' then
        return;
    end if;"""
    v_cols = ", ".join(values) or "null::boolean as zora_none"
    a_cols = "".join(f", {a}" for a in applies)
    return f"""
create or replace function @FUNCTION@(wal_record jsonb, identities jsonb, xid bigint)
returns table (rec jsonb, visible int[], unsure int[]) language plpgsql set search_path = '' as $zora_body$
#variable_conflict use_column
declare
    zora_r {entity};
    zora_l_claim text := nullif(pg_catalog.current_setting('request.jwt.claim', true), '');
    zora_l_sub text := nullif(pg_catalog.current_setting('request.jwt.claim.sub', true), '');
    zora_l_role text := nullif(pg_catalog.current_setting('request.jwt.claim.role', true), '');
    zora_l_email text := nullif(pg_catalog.current_setting('request.jwt.claim.email', true), '');
begin{guard}
    zora_r := pg_catalog.jsonb_populate_record(null::{entity}, wal_record);
    rec := pg_catalog.to_jsonb(zora_r);
    if xid is not null then
        for zora_i in 1 .. 500 loop  -- as the per-identity checker: until the commit is visible, bounded
            exit when realtime.zora_xact_visible(xid);
            perform pg_catalog.pg_sleep(0.001);
        end loop;
    end if;
    begin
        perform pg_catalog.set_config('role', 'zora_rls_sets', true);
        with zora_row as materialized (  -- the row, read once
            select * from {entity} as {alias} where {pk_cond}
        ), zora_c as (
            select e.value ->> 0 as zora_role, e.value -> 1 as zora_jwt, (e.value -> 1)::text as zora_claims,
                   (e.ordinality - 1)::int as zora_i
            from pg_catalog.jsonb_array_elements(identities) with ordinality e
            where e.value ->> 0 is not null
        ), zora_ro as materialized (
            select d.zora_role as zora_rn, ({' and '.join(ok)}) as zora_ok,
                   coalesce({may}, false) as zora_may, coalesce({bypass}, false) as zora_bypass{a_cols}
            from (select distinct zora_role from zora_c) d
            left join pg_catalog.pg_roles pr on pr.rolname = d.zora_role
            cross join (select c.relowner, c.relforcerowsecurity from pg_catalog.pg_class c
                        where c.oid = {_lit(entity)}::regclass) zora_t
        )
        select coalesce(pg_catalog.array_agg(zora_c.zora_i order by zora_c.zora_i)
                            filter (where zora_ro.zora_ok and zora_ro.zora_may and zora_e.zora_found
                                    and (zora_ro.zora_bypass or ({passes}))), '{{}}'),
               coalesce(pg_catalog.array_agg(zora_c.zora_i order by zora_c.zora_i)
                            filter (where not coalesce(zora_ro.zora_ok, false)), '{{}}')
        into visible, unsure
        from zora_c join zora_ro on zora_ro.zora_rn = zora_c.zora_role
        left join lateral (
            select true as zora_found, {v_cols}
            from zora_row as {alias}
            where zora_ro.zora_ok and zora_ro.zora_may
            offset 0  -- not pulled up: every applicable policy is evaluated, an error fails the whole query
        ) zora_e on true;
        perform pg_catalog.set_config('role', 'none', true);
    exception when others then
        perform pg_catalog.set_config('role', 'none', true);
        visible := null;  -- the caller asks the per-identity checker
        unsure := null;
    end;
    return next;
end;
$zora_body$;
"""
