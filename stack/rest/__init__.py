"""The REST endpoint: the PostgREST 12 subset supabase-py and supabase-js use, at ``/rest/v1``.

``/{table}`` for GET, HEAD, POST (insert, upsert), PATCH, DELETE; ``/rpc/{fn}`` for GET and POST.
Each request runs in one transaction as the role in the caller's JWT with the claims in
``request.jwt.claims`` (``stack.db.as_caller``), so grants and RLS decide; GET and HEAD run
read-only. See docs/protocol/rest.md for what is served and how it maps to PostgREST.
"""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg
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

__all__ = ["routes"]

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

    def _respond(self, request: Request, status: int, body: str | None, n: int, total: int | None, offset: int,
                 single: bool, prefs_applied: list[str], extra: dict[str, str] | None = None) -> Response:
        headers = dict(extra or {})
        if prefs_applied:
            headers["Preference-Applied"] = ", ".join(prefs_applied)
        if single:
            if n != 1:
                raise RestError(406, "PGRST116", "JSON object requested, multiple (or no) rows returned",
                                f"The result contains {n} rows")
            ctype = f"{OBJECT}; charset=utf-8"
        else:
            ctype = "application/json; charset=utf-8"
        if request.method in ("GET", "HEAD") or total is not None:
            total_s = "*" if total is None else str(total)
            headers["Content-Range"] = f"{offset}-{offset + n - 1}/{total_s}" if n else f"*/{total_s}"
        if body is None:
            return Response(status_code=status, headers=headers)
        content = b"" if request.method == "HEAD" else body.encode()
        return Response(content, status_code=status, media_type=ctype, headers=headers)

    async def run(self, request: Request, work: Any) -> Response:
        try:
            role, claims = self._role(request)
            read_only = request.method in ("GET", "HEAD")
            async with as_caller(request.app.state.pools.rest, role, claims, method=request.method,
                                 path=request.url.path, read_only=read_only) as conn:
                return await work(conn, role)
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
            if request.method in ("GET", "HEAD"):
                row = await (await conn.execute(b.read(rel, spec, count, single), b.params)).fetchone()
                assert row is not None
                total, n, body = row
                status = 200
                if total is not None:
                    if spec.offset and spec.offset >= total > 0:
                        raise RestError(416, "PGRST103", "Requested range not satisfiable",
                                        f"An offset of {spec.offset} was requested, but there are only {total} rows.")
                    if n < total:
                        status = 206
                return self._respond(request, status, body, n, total, spec.offset, single, applied)
            ret = prefs.get("return", "minimal")
            if ret in ("representation", "minimal", "headers-only"):
                applied.append(f"return={ret}")
            returning = ret == "representation"
            if request.method == "DELETE":
                stmt = b.delete(rel, spec.filters, returning)
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
                    stmt = b.insert(rel, rows, cols, [c.strip() for c in conflict.split(",")] if conflict else None,
                                    resolution, returning or ret == "headers-only", missing_default)
                    status_rep = status_min = 201
                else:
                    if not isinstance(payload, dict):
                        raise RestError(400, "PGRST102", "PATCH needs a JSON object")
                    cols = b.write_columns(rel, [payload], request.query_params.get("columns"))
                    if not cols:
                        return self._respond(request, 204, None, 0, None, 0, False, applied)
                    stmt = b.update(rel, payload, cols, spec.filters, returning)
                    status_rep, status_min = 200, 204
            if returning or ret == "headers-only":
                row = await (await conn.execute(b.returned(rel, stmt, spec, single), b.params)).fetchone()
                assert row is not None
                _, n, body = row
                extra = {}
                if ret == "headers-only":
                    extra["Location"] = self._location(name, rel.pk, body)
                    return self._respond(request, status_min, None, n, n if count else None, 0, False, applied, extra)
                return self._respond(request, status_rep, body, n, n if count else None, 0, single, applied)
            cur = await conn.execute(stmt, b.params)
            n = max(cur.rowcount, 0)
            return self._respond(request, status_min, None, n, n if count else None, 0, False, applied)

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
            if request.method == "POST":
                body = await self._json_body(request)
                if not isinstance(body, dict):
                    raise RestError(400, "PGRST102", "RPC arguments must be a JSON object")
                args: dict[str, Any] = body
            else:
                args = {}
            fn = self._pick(schema, fname, args, request)
            if request.method != "POST":
                args = {k: v for k, v in request.query_params.items() if k in fn.arg_names}
            spec = self._spec(request, set(fn.arg_names) if request.method != "POST" else None)
            single = self._wants_object(request)
            b = Builder(self.cache, schema)
            row = await (await conn.execute(b.rpc(fn, args, spec, single), b.params)).fetchone()
            assert row is not None
            _, n, body_text = row
            if not fn.returns_set:
                single = False
            return self._respond(request, 200, body_text, n, None, spec.offset, single, [])

        return await self.run(request, work)

    def _pick(self, schema: str, name: str, args: dict[str, Any], request: Request) -> Function:
        given = set(args) if request.method == "POST" else {k for k in request.query_params
                                                             if k not in RESERVED and "." not in k}
        options = self.cache.function(schema, name)
        fits = [f for f in options if set(f.required) <= given and (request.method != "POST" or given <= set(f.arg_names))]
        if request.method != "POST":  # query params that are not arguments are filters
            fits = [f for f in fits if set(f.required) <= given]
        if not fits:
            sig = ", ".join(sorted(given))
            raise RestError(404, "PGRST202", f"Could not find the function {schema}.{name}({sig}) in the schema cache",
                            f"Searched for the function {schema}.{name} with parameters {sig or 'none'}")
        fits.sort(key=lambda f: -len(set(f.arg_names) & given))
        return fits[0]

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

