-- What the realtime endpoint asks PostgreSQL for each change it may deliver, in one call:
-- is the table (still) in the publication, the row in PostgreSQL's own JSON rendering,
-- the columns with their type names, whether RLS is on, and which of the given
-- subscriber identities (role + JWT claims) may see the row under RLS.
-- Same idea as Supabase's realtime.apply_rls: each identity's check runs under
-- that role with that subscriber's claims in request.jwt.claims, so the table's
-- own policies decide. Checks read the current row by primary key.
--
-- Logical decoding can hand out a commit a few microseconds before the committing
-- transaction is visible to new snapshots (the commit record is flushed before the
-- backend leaves the proc array). A streaming server checks that fast, so with the
-- commit's xid the function first waits, bounded, until the transaction is visible;
-- otherwise an entitled subscriber would sometimes lose the event.

create or replace function realtime.zora_xact_visible(xid bigint) returns boolean
language plpgsql volatile set search_path = '' as $$
declare
    snap pg_catalog.pg_snapshot := pg_catalog.pg_current_snapshot();
    xmax bigint := pg_catalog.pg_snapshot_xmax(snap)::text::bigint;
    x8 bigint := ((xmax >> 32) << 32) | xid;
begin
    if x8 > xmax then
        x8 := x8 - 4294967296;  -- the xid belongs to the previous epoch
    end if;
    return x8 < 3 or pg_catalog.pg_visible_in_snapshot(x8::text::xid8, snap);
end;
$$;

create or replace function realtime.zora_apply_rls(entity regclass, wal_record jsonb, identities jsonb,
                                                   check_rows boolean default true, xid bigint default null)
returns table (in_publication boolean, rls_enabled boolean, rec jsonb, cols jsonb, pk text[], visible int[])
language plpgsql
set search_path = ''
as $$
declare
    n int := coalesce(jsonb_array_length(identities), 0);
    i int;
    role_name text;
    can_see boolean;
    check_sql text;
    pk_t text;
    pk_r text;
begin
    select exists (
        select 1 from pg_catalog.pg_publication_tables pt
        where pt.pubname = 'supabase_realtime' and pt.schemaname = c.relnamespace::regnamespace::text
          and pt.tablename = c.relname
    ), c.relrowsecurity
    into in_publication, rls_enabled
    from pg_catalog.pg_class c where c.oid = entity;

    select coalesce(jsonb_agg(jsonb_build_object('name', a.attname, 'type', t.typname) order by a.attnum), '[]')
    into cols
    from pg_catalog.pg_attribute a join pg_catalog.pg_type t on t.oid = a.atttypid
    where a.attrelid = entity and a.attnum > 0 and not a.attisdropped;

    select coalesce(array_agg(a.attname::text order by array_position(ix.indkey::int2[], a.attnum)), '{}')
    into pk
    from pg_catalog.pg_index ix join pg_catalog.pg_attribute a on a.attrelid = ix.indrelid and a.attnum = any(ix.indkey)
    where ix.indrelid = entity and ix.indisprimary;

    execute format('select pg_catalog.to_jsonb(r) from pg_catalog.jsonb_populate_record(null::%s, $1) r', entity)
        using wal_record into rec;

    visible := '{}';
    if not in_publication or n = 0 then
        return next;
        return;
    end if;

    if check_rows and rls_enabled and cardinality(pk) > 0 then
        if xid is not null then
            for i in 1 .. 500 loop  -- bounded: at most ~0.5 s, in practice a few microseconds
                exit when realtime.zora_xact_visible(xid);
                perform pg_catalog.pg_sleep(0.001);
            end loop;
        end if;
        select string_agg(format('t.%I', c), ', '), string_agg(format('r.%I', c), ', ')
        into pk_t, pk_r from unnest(pk) c;
        check_sql := format(
            'select exists (select 1 from %s t, pg_catalog.jsonb_populate_record(null::%s, $1) r where (%s) = (%s))',
            entity, entity, pk_t, pk_r);
    end if;

    for i in 0 .. n - 1 loop
        role_name := identities -> i ->> 0;
        if role_name is null or not pg_catalog.has_table_privilege(role_name, entity, 'SELECT') then
            continue;
        end if;
        if check_sql is null then
            -- no RLS on the table (or a DELETE: the row is gone): the SELECT grant decides
            can_see := not (check_rows and rls_enabled);
        else
            begin
                perform pg_catalog.set_config('role', role_name, true);
                perform pg_catalog.set_config('request.jwt.claims', (identities -> i -> 1)::text, true);
                execute check_sql using wal_record into can_see;
                perform pg_catalog.set_config('role', 'none', true);
            exception when others then
                perform pg_catalog.set_config('role', 'none', true);
                can_see := false;
            end;
        end if;
        if can_see then
            visible := visible || i;
        end if;
    end loop;
    return next;
end;
$$;

alter function realtime.zora_xact_visible(bigint) owner to supabase_realtime_admin;
alter function realtime.zora_apply_rls(regclass, jsonb, jsonb, boolean, bigint) owner to supabase_realtime_admin;
revoke all on function realtime.zora_apply_rls(regclass, jsonb, jsonb, boolean, bigint) from public;
grant execute on function realtime.zora_apply_rls(regclass, jsonb, jsonb, boolean, bigint) to supabase_realtime_admin;
