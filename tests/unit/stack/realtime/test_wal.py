"""``WalDecoder`` on wal2json format-v2 lines written as wal2json emits them (the options ``WAL2JSON_OPTIONS``
asks for: timestamps, LSNs, primary keys, xids, type names), with no database."""

from __future__ import annotations

import contextlib
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.realtime.wal import (
    WAL2JSON_OPTIONS,
    Change,
    Transaction,
    WalDecoder,
    WalFormatError,
    commit_time_iso,
    parse_lsn,
)

B = '{"action":"B","xid":729,"timestamp":"2026-11-24 21:46:05.161558+00","lsn":"0/1511878","nextlsn":"0/15118A8"}'
C = '{"action":"C","xid":729,"timestamp":"2026-11-24 21:46:05.161558+00","lsn":"0/1511878","nextlsn":"0/15118A8"}'
INSERT = (
    '{"action":"I","xid":729,"timestamp":"2026-11-24 21:46:05.161558+00","lsn":"0/1511668","schema":"public",'
    '"table":"items","columns":[{"name":"id","type":"bigint","value":1},'
    '{"name":"owner","type":"uuid","value":"6f9619ff-8b86-d011-b42d-00c04fc964ff"},'
    '{"name":"kind","type":"text","value":"b"},{"name":"n","type":"numeric(10,2)","value":12.50},'
    '{"name":"f","type":"double precision","value":null},{"name":"ok","type":"boolean","value":true},'
    '{"name":"data","type":"jsonb","value":"{\\"a\\": [1, \\"x\\"]}"},'
    '{"name":"note","type":"character varying(20)","value":"he said \\"hi\\""},'
    '{"name":"at","type":"timestamp with time zone","value":"2026-11-24 21:46:05.009807+00"},'
    '{"name":"d","type":"date","value":"2026-01-02"},{"name":"tags","type":"text[]","value":"{a,b}"}],'
    '"pk":[{"name":"id","type":"bigint"}]}'
)
INSERT_NULLS = (
    '{"action":"I","xid":729,"timestamp":"2026-11-24 21:46:05.161558+00","lsn":"0/15117D8","schema":"public",'
    '"table":"items","columns":[{"name":"id","type":"bigint","value":2},{"name":"owner","type":"uuid","value":null},'
    '{"name":"n","type":"numeric(10,2)","value":2.50},{"name":"data","type":"jsonb","value":null}],'
    '"pk":[{"name":"id","type":"bigint"}]}'
)
# REPLICA IDENTITY DEFAULT: the old key only (here the key itself changed, 2 -> 10)
UPDATE_KEY = (
    '{"action":"U","xid":731,"timestamp":"2026-11-24 21:46:06.162664+00","lsn":"0/15119B0","schema":"public",'
    '"table":"items","columns":[{"name":"id","type":"bigint","value":10},{"name":"kind","type":"text","value":"c"}],'
    '"identity":[{"name":"id","type":"bigint","value":2}],"pk":[{"name":"id","type":"bigint"}]}'
)
# REPLICA IDENTITY FULL: the whole old row
UPDATE_FULL = (
    '{"action":"U","xid":734,"timestamp":"2026-11-24 21:46:07.163737+00","lsn":"0/1511C38","schema":"public",'
    '"table":"full_t","columns":[{"name":"id","type":"integer","value":1},{"name":"status","type":"text","value":"paid"},'
    '{"name":"secret","type":"text","value":"s"}],"identity":[{"name":"id","type":"integer","value":1},'
    '{"name":"status","type":"text","value":"new"},{"name":"secret","type":"text","value":"s"}],'
    '"pk":[{"name":"id","type":"integer"}]}'
)
DELETE = (
    '{"action":"D","xid":732,"timestamp":"2026-11-24 21:46:08.162969+00","lsn":"0/1511AA0","schema":"public",'
    '"table":"items","identity":[{"name":"id","type":"bigint","value":10}],"pk":[{"name":"id","type":"bigint"}]}'
)
NO_PK = (
    '{"action":"I","xid":736,"timestamp":"2026-11-24 21:46:09.164301+00","lsn":"0/1511D40","schema":"public",'
    '"table":"nopk","columns":[{"name":"a","type":"integer","value":1},{"name":"b","type":"text","value":"x"}],"pk":[]}'
)
TRUNCATE = ('{"action":"T","xid":737,"timestamp":"2026-11-24 21:46:10.169153+00","lsn":"0/1512920","schema":"public",'
            '"table":"full_t"}')
MESSAGE = ('{"action":"M","xid":738,"timestamp":"2026-11-24 21:46:11.170031+00","lsn":"0/1512B00","transactional":true,'
           '"prefix":"p","content":"hello"}')


def decode(*lines: str | bytes) -> list[Transaction]:
    d = WalDecoder(clock=lambda: 42)
    return [tx for line in lines if (tx := d.feed(line)) is not None]


def test_options_ask_for_what_the_decoder_reads() -> None:
    assert WAL2JSON_OPTIONS["format-version"] == "2"
    assert all(WAL2JSON_OPTIONS[k] == "1" for k in ("include-timestamp", "include-lsn", "include-pk", "include-xids"))


def test_insert_transaction() -> None:
    [tx] = decode(B, INSERT, INSERT_NULLS, C)
    assert tx.commit_lsn == 0x1511878 and tx.xid == 729 and tx.received_ns == 42
    assert tx.commit_timestamp == "2026-11-24T21:46:05.161558Z"
    first, second = tx.changes
    assert isinstance(first, Change)
    assert (first.schema, first.table, first.action, first.pk, first.identity) == ("public", "items", "INSERT",
                                                                                   ("id",), {})
    assert first.record == {
        "id": 1, "owner": "6f9619ff-8b86-d011-b42d-00c04fc964ff", "kind": "b", "n": Decimal("12.50"), "f": None,
        "ok": True, "data": {"a": [1, "x"]}, "note": 'he said "hi"', "at": "2026-11-24 21:46:05.009807+00",
        "d": "2026-01-02", "tags": "{a,b}"}
    assert str(first.record["n"]) == "12.50"  # numeric keeps its digits
    assert first.types["n"] == "numeric(10,2)" and first.types["at"] == "timestamp with time zone"
    assert first.types["note"] == "character varying(20)" and first.types["data"] == "jsonb"
    assert second.record == {"id": 2, "owner": None, "n": Decimal("2.50"), "data": None}


def test_update_with_key_change_and_with_replica_identity_full() -> None:
    [key_tx] = decode(B, UPDATE_KEY, C)
    [key] = key_tx.changes
    assert key.action == "UPDATE" and key.record == {"id": 10, "kind": "c"} and key.identity == {"id": 2}
    [full_tx] = decode(B, UPDATE_FULL, C)
    [full] = full_tx.changes
    assert full.record == {"id": 1, "status": "paid", "secret": "s"}
    assert full.identity == {"id": 1, "status": "new", "secret": "s"} and full.types["status"] == "text"


def test_delete_carries_only_the_identity() -> None:
    [tx] = decode(B, DELETE, C)
    [d] = tx.changes
    assert (d.action, d.record, d.identity, d.types) == ("DELETE", {}, {"id": 10}, {"id": "bigint"})


def test_no_primary_key_truncate_and_messages() -> None:
    [tx] = decode(B, NO_PK, TRUNCATE, MESSAGE, C)
    [c] = tx.changes
    assert c.table == "nopk" and c.pk == ()  # T and M are not postgres_changes events
    [empty] = decode(B, C)
    assert empty.changes == []


def test_bytes_with_newlines_as_pg_recvlogical_writes_them() -> None:
    [tx] = decode(*(f"{line}\n".encode() for line in (B, INSERT, C)))
    assert tx.changes[0].record["id"] == 1


def test_transactions_in_a_row_do_not_mix() -> None:
    first, second = decode(B, INSERT, C, B.replace("729", "730"), DELETE, C.replace("0/1511878", "0/1511AF0"))
    assert [c.action for c in first.changes] == ["INSERT"]
    assert [c.action for c in second.changes] == ["DELETE"] and second.commit_lsn == 0x1511AF0


@pytest.mark.parametrize(
    "bad",
    ['{"action":"I","xid":729,"schema":"pub', "garbage", "[]", "null", '{"action":"I","table":"t"}',
     '{"action":"U","schema":"s","table":"t","columns":[1,2]}', '{"action":"C","xid":1}',
     '{"action":"C","lsn":"zz","timestamp":"2026-11-24 21:46:05+00"}', '{"action":"C","lsn":"0/1","timestamp":"x"}',
     b"\xff\xfe"],
)
def test_a_torn_or_garbage_line_drops_its_whole_transaction(bad: str | bytes) -> None:
    d = WalDecoder()
    assert d.feed(B) is None and d.feed(INSERT) is None
    with pytest.raises(WalFormatError):
        d.feed(bad)
    assert d.feed(INSERT_NULLS) is None
    assert d.feed(C) is None  # never half a transaction
    assert d.feed(B) is None and d.feed(DELETE) is None
    tx = d.feed(C)  # the next one is whole again
    assert tx is not None and [c.action for c in tx.changes] == ["DELETE"]


@given(st.text(max_size=60) | st.binary(max_size=60))
def test_any_line_decodes_or_raises_wal_format_error(line: str | bytes) -> None:
    d = WalDecoder()
    d.feed(B)
    with contextlib.suppress(WalFormatError):  # anything else escaping fails the test
        d.feed(line)
    tx = d.feed(B) or d.feed(INSERT) or d.feed(C)
    assert tx is not None and len(tx.changes) == 1


def test_lsn_and_commit_time() -> None:
    assert parse_lsn("0/1511878") == 0x1511878
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert commit_time_iso("2026-11-24 21:46:05.16235+00") == "2026-11-24T21:46:05.162350Z"
    assert commit_time_iso("2026-11-24 21:46:05+00") == "2026-11-24T21:46:05.000000Z"
    assert commit_time_iso("2026-11-24 23:46:05.5+02") == "2026-11-24T21:46:05.500000Z"
    assert commit_time_iso("2026-11-24 21:46:05.009807+05:30") == "2026-11-24T16:16:05.009807Z"
