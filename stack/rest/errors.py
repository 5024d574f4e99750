"""PostgREST's error shape ``{"code", "details", "hint", "message"}`` and its SQLSTATE -> HTTP status map.

The map follows PostgREST 12's documented table (docs.postgrest.org, "Errors"); our own
parse and schema-cache errors use PostgREST's PGRST codes.
"""

from __future__ import annotations

from typing import Any

import psycopg
from starlette.responses import JSONResponse

__all__ = ["RestError", "from_pg", "status_for_sqlstate"]


class RestError(Exception):
    def __init__(self, status: int, code: str, message: str, details: str | None = None, hint: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.hint = hint
        self.headers = headers or {}
        self.details_json: Any = None  # PGRST201 carries its details as a list of objects

    def response(self) -> JSONResponse:
        details = self.details_json if self.details_json is not None else self.details
        return JSONResponse({"code": self.code, "details": details, "hint": self.hint, "message": self.message},
                            status_code=self.status, headers=self.headers)


def status_for_sqlstate(state: str, role: str) -> int:
    if state == "42501":
        return 401 if role == "anon" else 403  # insufficient privilege
    exact = {"23503": 409, "23505": 409, "25006": 405, "42883": 404, "42P01": 404, "42P17": 500, "P0001": 400,
             "53400": 500, "57014": 504}
    if state in exact:
        return exact[state]
    prefix = {"08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500, "38": 500, "39": 500,
              "3B": 500, "3D": 404, "3F": 404, "40": 500, "53": 503, "54": 500, "55": 500, "57": 500, "58": 500,
              "F0": 500, "HV": 500, "P0": 500, "XX": 500}
    return prefix.get(state[:2], 400)


def from_pg(e: psycopg.Error, role: str) -> RestError:
    diag: Any = e.diag
    if diag.sqlstate is None and isinstance(e, psycopg.DataError):
        # refused by psycopg before it reached the server (a NUL byte in a text value): answer as PostgreSQL would
        if "NUL" in str(e):
            return RestError(400, "22021", 'invalid byte sequence for encoding "UTF8": 0x00')
        return RestError(400, "22000", str(e).strip())
    state = diag.sqlstate or "XX000"
    return RestError(status_for_sqlstate(state, role), state, diag.message_primary or str(e).strip(),
                     diag.message_detail, diag.message_hint)


def parse_error(message: str, details: str | None = None) -> RestError:
    return RestError(400, "PGRST100", message, details)


def unknown_table(schema: str, table: str) -> RestError:
    return RestError(404, "PGRST205", f"Could not find the table '{schema}.{table}' in the schema cache")


def unknown_column(table: str, column: str) -> RestError:
    return RestError(400, "42703", f"column {table}.{column} does not exist")


def no_relationship(parent: str, child: str) -> RestError:
    return RestError(400, "PGRST200", f"Could not find a relationship between '{parent}' and '{child}' in the "
                                      "schema cache",
                     "Searched for a foreign key relationship between them in the schema cache")
