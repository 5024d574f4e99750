"""The REST endpoint: the PostgREST 12 subset supabase-py and supabase-js use, at ``/rest/v1``.

``/{table}`` for GET, HEAD, POST (insert, upsert), PATCH, DELETE; ``/rpc/{fn}`` for GET and POST.
Each request runs in one transaction as the role in the caller's JWT with the claims in
``request.jwt.claims`` (``stack.db.as_caller``), so grants and RLS decide; GET and HEAD run
read-only. See docs/protocol/rest.md for what is served and how it maps to PostgREST.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

import psycopg
from psycopg import sql
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from stack import jwt
from stack.db import as_caller
from stack.rest.errors import RestError, from_pg, parse_error
from stack.rest.grammar import parse_filter, parse_logic, parse_order, parse_select
from stack.rest.schema_cache import Function, SchemaCache
from stack.rest.sqlgen import Builder, EmbedOptions, ReadSpec
from stack.settings import StackSettings

__all__ = ["pick_function", "routes"]

RESERVED = {"select", "order", "limit", "offset", "on_conflict", "columns", "and", "or", "not.and", "not.or"}
OBJECT = "application/vnd.pgrst.object+json"


def _prefer(request: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for header in request.headers.getlist("prefer"):
        for token in header.split(","):
            k, _, v = token.strip().partition("=")
            if k:
                out[k.strip()] = v.strip()
    return out


class Rollback(Exception):
    """Raised inside the request's transaction to roll it back and still answer ``response``."""

    def __init__(self, response: Response) -> None:
        super().__init__("rollback")
        self.response = response


def _sig(schema: str, name: str, given: set[str]) -> str:
    return f"{schema}.{name}({', '.join(sorted(given))})"


def pick_function(options: list[Function], schema: str, name: str, given: set[str], post: bool, raw_body: bool,
                  names: list[str]) -> Function:
    """The overload a call means, as PostgREST chooses it: the argument names given must cover the
    required parameters and (in a POST body) be parameters; a single unnamed json/jsonb parameter takes any
    body. None: PGRST202; more than one: PGRST203 (300)."""
    fits = []
    if not raw_body:
        for f in options:
            names_f = set(f.arg_names)
            if set(f.required) <= given and (not post or given <= names_f):
                fits.append(f)
    if not fits and post:
        fits = [f for f in options if f.arg_names == ("",) and f.arg_types[0] in ("json", "jsonb")]
    if not fits:
        others = [f for f in options if f.arg_names != ("",)]
        hint = None
        if others:
            hint = f"Perhaps you meant to call the function {schema}.{name}({', '.join(sorted(others[0].arg_names))})"
        else:
            close = difflib.get_close_matches(name, [n for n in names if n != name], n=1, cutoff=0.8)
            if close:
                hint = f"Perhaps you meant to call the function {schema}.{close[0]}"
        if given:
            params = f"with parameter{'s' if len(given) > 1 else ''} {', '.join(sorted(given))}"
            msg = f"Could not find the function {_sig(schema, name, given)} in the schema cache"
        else:
            params = "without parameters"
            msg = f"Could not find the function {schema}.{name} without parameters in the schema cache"
        raise RestError(404, "PGRST202", msg, f"Searched for the function {schema}.{name} {params} or with a single "
                                              "unnamed json/jsonb parameter, but no matches were found in the schema "
                                              "cache.", hint)
    if len(fits) > 1 and not post:  # GET: the overload using most of the query's names; the rest are filters
        best = max(len(set(f.arg_names) & given) for f in fits)
        fits = [f for f in fits if len(set(f.arg_names) & given) == best]
    if len(fits) > 1:
        sigs = ", ".join(f.signature() for f in sorted(fits, key=lambda f: (len(f.arg_names), f.signature())))
        raise RestError(300, "PGRST203", f"Could not choose the best candidate function between: {sigs}", None,
                        "Try renaming the parameters or the function itself in the database so function overloading "
                        "can be resolved")
    return fits[0]


def _csv(body: str) -> str:
    """PostgREST's text/csv: a header of the column names, then one line per row; null is empty."""
    try:
        rows = json.loads(body)
    except ValueError:
        return body
    if isinstance(rows, dict):
        rows = [rows]
    if not isinstance(rows, list) or not rows or not isinstance(rows[0], dict):
        return ""
    names = list(rows[0])
    lines = [",".join(names)]
    for r in rows:
        lines.append(",".join("" if r.get(k) is None else _csv_value(r.get(k)) for k in names))
    return "\n".join(lines)


def _csv_value(v: Any) -> str:
    """A value as PostgreSQL writes a field of a row: quoted when it holds , " ( ) \\ or white space."""
    if isinstance(v, bool):
        text = "t" if v else "f"
    elif isinstance(v, dict | list):
        text = json.dumps(v, ensure_ascii=False)
    else:
        text = str(v)
    if text == "" or re.search(r'[,"()\\\s]', text):
        return '"' + text.replace("\\", "\\\\").replace('"', '""') + '"'
    return text


def _int(value: str, what: str) -> int:
    if not re.fullmatch(r"\d{1,12}", value.strip()):
        raise parse_error(f"failed to parse {what} parameter ({value})")
    return int(value)


class RestAPI:
    def __init__(self, settings: StackSettings) -> None:
        self.s = settings
        self.cache = SchemaCache(settings.db_schemas)

    # -- request plumbing ------------------------------------------------------------------------
    def _role(self, request: Request) -> tuple[str, dict[str, Any]]:
        auth = request.headers.get("authorization", "")
        if not auth:
            return "anon", {"role": "anon"}
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        try:
            claims = jwt.decode(token, self.s.jwt_secret)
        except jwt.JWTError as e:
            code, msg = ("PGRST303", "JWT expired") if e.expired else ("PGRST301", e.reason)
            raise RestError(401, code, msg, headers={
                "WWW-Authenticate": f'Bearer error="invalid_token", error_description="{msg}"'}) from e
        role = claims.get("role", "anon")
        if not isinstance(role, str) or not role:
            raise RestError(401, "PGRST301", "JWT role claim must be a string")
        return role, claims

    def _schema(self, request: Request, write: bool) -> str:
        name = request.headers.get("content-profile" if write else "accept-profile")
        if name is None:
            return self.s.db_schemas[0]
        if name not in self.s.db_schemas:
            raise RestError(406, "PGRST106", "The schema must be one of the following: " + ", ".join(self.s.db_schemas))
        return name

    async def _ensure(self, request: Request, conn: psycopg.AsyncConnection, schema: str, table: str | None = None,
                      fn: str | None = None) -> None:
        found = True
        if table is not None:
            found = self.cache.relation(schema, table) is not None
        if fn is not None:
            found = bool(self.cache.function(schema, fn))
        ddl = getattr(request.app.state, "ddl", None)
        await self.cache.ensure(conn, found, ddl.generation if ddl is not None else None)

    @staticmethod
    def _spec(request: Request, fn_args: set[str] | None = None) -> ReadSpec:
        q = request.query_params
        spec = ReadSpec(select=parse_select(q.get("select", "*")))
        for key, value in q.multi_items():
            if fn_args is not None and key in fn_args:
                continue
            base, _, last = key.rpartition(".")
            if key in RESERVED:
                if key in ("and", "or", "not.and", "not.or"):
                    spec.filters.append(parse_logic(key, value))
                elif key == "order":
                    spec.order = parse_order(value)
                elif key == "limit":
                    spec.limit = _int(value, "limit")
                elif key == "offset":
                    spec.offset = _int(value, "offset")
                continue
            if base and last in ("order", "limit", "offset", "or", "and"):  # aimed at an embedded resource
                opts = spec.embeds.setdefault(base, EmbedOptions())
                if last == "order":
                    opts.order = parse_order(value)
                elif last == "limit":
                    opts.limit = _int(value, "limit")
                elif last == "offset":
                    opts.offset = _int(value, "offset")
                else:
                    opts.filters.append(parse_logic(last, value))
                continue
            if "." in key and "->" not in key.split(".")[0]:
                emb, _, col = key.rpartition(".")
                spec.embeds.setdefault(emb, EmbedOptions()).filters.append(parse_filter(col, value))
                continue
            spec.filters.append(parse_filter(key, value))
        rng = request.headers.get("range")
        if rng and request.headers.get("range-unit", "items") == "items":
            m = re.fullmatch(r"\s*(\d+)-(\d*)\s*", rng)
            if m:
                lo = int(m.group(1))
                spec.offset = max(spec.offset, lo)
                if m.group(2):
                    span = int(m.group(2)) - lo + 1
                    if span <= 0:
                        raise RestError(416, "PGRST103", "Requested range not satisfiable")
                    spec.limit = span if spec.limit is None else min(spec.limit, span)
        return spec

    @staticmethod
    def _wants_object(request: Request) -> bool:
        return OBJECT in request.headers.get("accept", "")

    @staticmethod
    def _format(request: Request) -> str:
        """json | stripped (``nulls=stripped``) | csv, from Accept."""
        accept = request.headers.get("accept", "")
        if "text/csv" in accept:
            return "csv"
        if "nulls=stripped" in accept.replace(" ", ""):
            return "stripped"
        return "json"

    @staticmethod
    def _max_affected(prefs: dict[str, str], applied: list[str]) -> int | None:
        """``Prefer: handling=strict, max-affected=N``: more rows than N is PGRST124 (and a rollback)."""
        if prefs.get("handling") != "strict" or "max-affected" not in prefs:
            return None
        value = prefs["max-affected"]
        if not re.fullmatch(r"\d{1,12}", value):
            raise RestError(400, "PGRST122", "Invalid preferences given with handling=strict",
                            f"Invalid preferences: max-affected={value}")
        applied += ["handling=strict", f"max-affected={value}"]
        return int(value)

    def _plan_request(self, request: Request) -> tuple[str, tuple[str, ...]] | None:
        """``Accept: application/vnd.pgrst.plan+json; for="..."; options=analyze|verbose``: (format, options),
        served when the ``pgrst.db_plan_enabled`` role setting is true, as PostgREST's db-plan-enabled."""
        accept = request.headers.get("accept", "")
        m = re.match(r"\s*application/vnd\.pgrst\.plan(?:\+(json|text))?", accept)
        if not m:
            return None
        if self.cache.config.get("db_plan_enabled", "false").lower() not in ("true", "on", "1", "yes"):
            raise RestError(406, "PGRST107", "None of these media types are available: " + accept.split(";")[0])
        om = re.search(r"options=([a-z|]*)", accept)
        opts = tuple(o for o in (om.group(1).split("|") if om else []) if o)
        if any(o not in ("analyze", "verbose", "settings", "buffers", "wal") for o in opts):
            raise RestError(406, "PGRST107", f"None of these media types are available: {accept}")
        return m.group(1) or "text", opts

    @staticmethod
    async def _explain(conn: psycopg.AsyncConnection, stmt: Any, params: dict[str, Any], fmt: str,
                       opts: tuple[str, ...]) -> Response:
        words = [f"FORMAT {fmt.upper()}"] + [o.upper() for o in opts]  # from the fixed list checked above
        explain = sql.SQL("EXPLAIN ({}) ").format(sql.SQL(", ".join(words))) + stmt
        rows = await (await conn.execute(explain, params)).fetchall()
        body = json.dumps(rows[0][0]) if fmt == "json" else "\n".join(str(r[0]) for r in rows)
        return Response(body, media_type=f"application/vnd.pgrst.plan+{fmt}; charset=utf-8")

    def _tx_rollback(self, prefs: dict[str, str], applied: list[str]) -> bool:
        """``Prefer: tx=rollback|commit``, honoured when db-tx-end allows the override, as PostgREST does."""
        tx = prefs.get("tx")
        if tx not in ("commit", "rollback"):
            return False
        end = self.cache.config.get("db_tx_end", "commit")
        if not end.endswith("allow-override"):
            return end.startswith("rollback")
        applied.append(f"tx={tx}")
        return tx == "rollback"

    def _respond(self, request: Request, status: int, body: str | None, n: int, total: int | None, offset: int,
                 single: bool, prefs_applied: list[str], extra: dict[str, str] | None = None, fmt: str = "json",
                 range_header: bool = True) -> Response:
        headers = dict(extra or {})
        if prefs_applied:
            headers["Preference-Applied"] = ", ".join(prefs_applied)
        if single:
            if n != 1:
                raise RestError(406, "PGRST116", "Cannot coerce the result to a single JSON object",
                                f"The result contains {n} rows")
            ctype = f"{OBJECT}; charset=utf-8"
        else:
            ctype = "application/json; charset=utf-8"
        if range_header and (request.method in ("GET", "HEAD") or total is not None):
            total_s = "*" if total is None else str(total)
            headers["Content-Range"] = f"{offset}-{offset + n - 1}/{total_s}" if n else f"*/{total_s}"
        if body is None:
            return Response(status_code=status, headers=headers)
        if fmt == "csv":
            body, ctype = _csv(body), "text/csv; charset=utf-8"
        content = b"" if request.method == "HEAD" else body.encode()
        return Response(content, status_code=status, media_type=ctype, headers=headers)

    async def run(self, request: Request, work: Any) -> Response:
        try:
            role, claims = self._role(request)
            read_only = request.method in ("GET", "HEAD")
            async with as_caller(request.app.state.pools.rest, role, claims, method=request.method,
                                 path=request.url.path, read_only=read_only) as conn:
                return await work(conn, role)
        except Rollback as r:  # Prefer: tx=rollback: the transaction is rolled back, the answer stands
            return r.response
        except RestError as e:
            return e.response()
        except psycopg.Error as e:
            return from_pg(e, self._role_or_anon(request)).response()

    def _role_or_anon(self, request: Request) -> str:
        try:
            return self._role(request)[0]
        except RestError:
            return "anon"

    # -- tables ----------------------------------------------------------------------------------
    async def table(self, request: Request) -> Response:
        name = request.path_params["table"]
        write = request.method in ("POST", "PATCH", "DELETE", "PUT")

        async def work(conn: psycopg.AsyncConnection, role: str) -> Response:
            schema = self._schema(request, write)
            await self._ensure(request, conn, schema, table=name)
            b = Builder(self.cache, schema)
            rel = b.relation(name)
            prefs = _prefer(request)
            single = self._wants_object(request)
            spec = self._spec(request)
            applied: list[str] = []
            count = prefs.get("count") in ("exact", "planned", "estimated")
            if count:
                applied.append(f"count={prefs['count']}")
            fmt = self._format(request)
            if request.method in ("GET", "HEAD"):
                planned = prefs.get("count") == "planned"
                stmt = b.read(rel, spec, count and not planned, single, strip_nulls=fmt == "stripped")
                plan = self._plan_request(request)
                if plan is not None:
                    return await self._explain(conn, stmt, b.params, *plan)
                row = await (await conn.execute(stmt, b.params)).fetchone()
                assert row is not None
                total, n, body = row
                if planned:
                    pb = Builder(self.cache, schema)
                    est = await (await conn.execute(pb.planned_count(rel, spec), pb.params)).fetchone()
                    total = int(est[0][0]["Plan"]["Plan Rows"]) if est else None
                status = 200
                if total is not None:
                    if spec.offset and spec.offset >= total > 0:
                        raise RestError(416, "PGRST103", "Requested range not satisfiable",
                                        f"An offset of {spec.offset} was requested, but there are only {total} rows.")
                    if n < total:
                        status = 206
                return self._respond(request, status, body, n, total, spec.offset, single, applied, fmt=fmt)
            ret = prefs.get("return", "minimal")
            if ret in ("representation", "minimal", "headers-only"):
                applied.append(f"return={ret}")
            max_affected = self._max_affected(prefs, applied)
            rollback = self._tx_rollback(prefs, applied)
            returning = ret == "representation"
            # RETURNING only when the rows are needed: a write without it needs no SELECT policy (RLS)
            need_rows = returning or ret == "headers-only" or max_affected is not None
            upsert = False
            if request.method == "DELETE":
                stmt = b.delete(rel, spec.filters, need_rows)
                status_rep, status_min = 200, 204
            else:
                payload = await self._json_body(request)
                if request.method == "POST":
                    rows = payload if isinstance(payload, list) else [payload]
                    if not all(isinstance(r, dict) for r in rows):
                        raise RestError(400, "PGRST102", "All object keys must match")
                    resolution = prefs.get("resolution")
                    if resolution not in (None, "merge-duplicates", "ignore-duplicates"):
                        resolution = None
                    if resolution:
                        applied.append(f"resolution={resolution}")
                    conflict = request.query_params.get("on_conflict")
                    cols = b.write_columns(rel, rows, request.query_params.get("columns"))
                    missing_default = prefs.get("missing") == "default"
                    if missing_default:
                        applied.append("missing=default")
                    upsert = resolution == "merge-duplicates" and need_rows
                    stmt = b.insert(rel, rows, cols, [c.strip() for c in conflict.split(",")] if conflict else None,
                                    resolution, need_rows, missing_default, mark_inserted=upsert)
                    status_rep = status_min = 201
                else:
                    if not isinstance(payload, dict):
                        raise RestError(400, "PGRST102", "PATCH needs a JSON object")
                    cols = b.write_columns(rel, [payload], request.query_params.get("columns"))
                    if not cols:
                        return self._respond(request, 204, None, 0, None, 0, False, applied)
                    stmt = b.update(rel, payload, cols, spec.filters, need_rows)
                    status_rep, status_min = 200, 204
            if not need_rows:
                cur = await conn.execute(stmt, b.params)
                n = max(cur.rowcount, 0)
                resp = self._respond(request, status_min, None, n, n if count else None, 0, False, applied)
                if rollback:
                    raise Rollback(resp)
                return resp
            row = await (await conn.execute(b.returned(rel, stmt, spec, single, upsert, fmt == "stripped"),
                                            b.params)).fetchone()
            assert row is not None
            _, n, body = row[0], row[1], row[2]
            if upsert and row[3] == 0 and n > 0:  # an upsert that only updated answers 200, as PostgREST
                status_rep = status_min = 200
            if max_affected is not None and n > max_affected:
                raise RestError(400, "PGRST124", "Query result exceeds max-affected preference constraint",
                                f"The query affects {n} rows")
            if ret == "headers-only":
                extra = {"Location": self._location(name, rel.pk, body)}
                resp = self._respond(request, status_min, None, n, n if count else None, 0, False, applied, extra)
            elif returning:
                resp = self._respond(request, status_rep, body, n, n if count else None, 0, single, applied, fmt=fmt)
            else:
                resp = self._respond(request, status_min, None, n, n if count else None, 0, False, applied)
            if rollback:
                raise Rollback(resp)
            return resp

        return await self.run(request, work)

    @staticmethod
    def _location(table: str, pk: tuple[str, ...], body: str | None) -> str:
        try:
            first = (json.loads(body or "[]") or [{}])[0]
        except (ValueError, IndexError):
            first = {}
        q = "&".join(f"{c}=eq.{first.get(c)}" for c in pk)
        return f"/{table}" + (f"?{q}" if q else "")

    @staticmethod
    async def _json_body(request: Request) -> Any:
        raw = await request.body()
        ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if ctype not in ("application/json", OBJECT, ""):
            raise RestError(415, "PGRST107", f"The request's Content-Type '{ctype}' is not supported")
        try:
            return json.loads(raw) if raw.strip() else {}
        except ValueError as e:
            raise RestError(400, "PGRST102", "Empty or invalid json", str(e)) from e

    # -- rpc -------------------------------------------------------------------------------------
    async def rpc(self, request: Request) -> Response:
        fname = request.path_params["fn"]

        async def work(conn: psycopg.AsyncConnection, role: str) -> Response:
            schema = self._schema(request, request.method == "POST")
            await self._ensure(request, conn, schema, fn=fname)
            prefs = _prefer(request)
            body: Any = None
            if request.method == "POST":
                body = await self._json_body(request)
                if body is None:  # a JSON null: no arguments
                    body = {}
                given = set(body) if isinstance(body, dict) else set()
            else:
                given = {k for k in request.query_params if k not in RESERVED and "." not in k}
            fn = pick_function(self.cache.function(schema, fname), schema, fname, given, request.method == "POST",
                               body is not None and not isinstance(body, dict), self.cache.callable_names(schema))
            if request.method == "POST":
                if isinstance(body, dict) and (given <= set(fn.arg_names)):
                    args: dict[str, Any] = body
                elif fn.arg_names == ("",):  # a single unnamed json/jsonb parameter takes the whole body
                    args = {"": body}
                else:
                    args = {}
            else:
                args = {k: v for k, v in request.query_params.items() if k in fn.arg_names}
            spec = self._spec(request, set(fn.arg_names) if request.method != "POST" else None)
            single = self._wants_object(request)
            fmt = self._format(request)
            applied: list[str] = []
            count = prefs.get("count") in ("exact", "planned", "estimated")
            if count:
                applied.append(f"count={prefs['count']}")
            b = Builder(self.cache, schema)
            row = await (await conn.execute(b.rpc(fn, args, spec, single, count, fmt == "stripped"),
                                            b.params)).fetchone()
            assert row is not None
            total, n, body_text = row[0], row[1], row[2]
            max_affected = self._max_affected(prefs, applied)
            if max_affected is not None and n > max_affected:
                raise RestError(400, "PGRST124", "Query result exceeds max-affected preference constraint",
                                f"The query affects {n} rows")
            rollback = self._tx_rollback(prefs, applied)
            if fn.returns_void:
                resp = self._respond(request, 204, None, 0, None, 0, False, applied, range_header=False)
            else:
                if not fn.returns_set:
                    single = False
                resp = self._respond(request, 200, body_text, n, total, spec.offset, single, applied, fmt=fmt,
                                     range_header=fn.returns_set or total is not None)
            if rollback:
                raise Rollback(resp)
            return resp

        return await self.run(request, work)

    async def root(self, request: Request) -> Response:
        async def work(conn: psycopg.AsyncConnection, role: str) -> Response:
            await self._ensure(request, conn, self.s.db_schemas[0])
            exposed = self.s.db_schemas[0]
            paths: dict[str, dict[str, Any]] = {
                f"/{r.name}": {} for (schema, _), r in self.cache.relations.items() if schema == exposed}
            return JSONResponse({"swagger": "2.0", "info": {"title": "Zora embedded REST", "version": "12"},
                                 "paths": paths})
        return await self.run(request, work)


def routes(settings: StackSettings) -> list[BaseRoute]:
    api = RestAPI(settings)
    return [
        Route("/", api.root, methods=["GET", "HEAD"]),
        Route("/rpc/{fn}", api.rpc, methods=["GET", "HEAD", "POST"]),
        Route("/{table}", api.table, methods=["GET", "HEAD", "POST", "PATCH", "DELETE"]),
    ]

