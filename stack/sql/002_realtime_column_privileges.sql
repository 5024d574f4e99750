-- Column privileges, as Supabase Realtime (walrus) honours them.
--
-- A subscriber's role receives a table's changes when it may select the table's primary key, whether
-- by a table grant or by column grants (was: a table grant only, so a role with column grants got
-- nothing); which columns of a change it then sees is decided per role by the endpoint
-- (stack/realtime/changes.py), from has_column_privilege. Only the checker's privilege test changes;
-- checkers are regenerated from this definition the next time the endpoint learns a table.

-- What the endpoint caches about a table, and the name of its checker (created here).
create or replace function realtime.zora_table_info(entity regclass)
returns table (in_publication boolean, rls_enabled boolean, cols jsonb, pk text[], checker text)
language plpgsql set search_path = '' as $$
declare
    tname text := entity::text;
    pk_cond text;
    may_cond text;
    body text;
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
    from pg_catalog.pg_index ix
    join pg_catalog.pg_attribute a on a.attrelid = ix.indrelid and a.attnum = any(ix.indkey)
    where ix.indrelid = entity and ix.indisprimary;

    if cardinality(pk) > 0 then
        select string_agg(format('t.%I = r.%I', c, c), ' and ') into pk_cond from unnest(pk) c;
    else
        pk_cond := 'false';  -- no primary key: rows cannot be checked, so RLS tables deliver nothing
    end if;
    -- a role may receive the table's changes when it may select the primary key (by a table or column grant)
    if cardinality(pk) > 0 then
        select string_agg(format('pg_catalog.has_column_privilege(role_name, %L::regclass, %L, ''SELECT'')',
                                 tname, c), ' and ')
        into may_cond from unnest(pk) c;
    else
        may_cond := format('pg_catalog.has_any_column_privilege(role_name, %L::regclass, ''SELECT'')', tname);
    end if;

    checker := format('realtime.%I', 'zora_chk_' || entity::oid);
    body := format($fn$
create or replace function %1$s(wal_record jsonb, identities jsonb, check_rows boolean, xid bigint)
returns table (rec jsonb, visible int[]) language plpgsql set search_path = '' as $body$
declare
    r %2$s;
    n int := coalesce(pg_catalog.jsonb_array_length(identities), 0);
    i int;
    role_name text;
    current_role_name text := '';
    can_see boolean;
    may_select jsonb := '{}';
begin
    r := pg_catalog.jsonb_populate_record(null::%2$s, wal_record);
    rec := pg_catalog.to_jsonb(r);
    visible := '{}';
    if n = 0 then
        return next;
        return;
    end if;
    if xid is not null and check_rows and %3$s then
        for i in 1 .. 500 loop  -- bounded: at most ~0.5 s, in practice a few microseconds
            exit when realtime.zora_xact_visible(xid);
            perform pg_catalog.pg_sleep(0.001);
        end loop;
    end if;
    for i in 0 .. n - 1 loop
        role_name := identities -> i ->> 0;
        if role_name is null then
            continue;
        end if;
        if not may_select ? role_name then
            may_select := may_select || pg_catalog.jsonb_build_object(role_name,
                %6$s);
        end if;
        if not (may_select ->> role_name)::boolean then
            continue;
        end if;
        if not (check_rows and %3$s) then
            can_see := true;  -- no RLS on the table, or a DELETE (the row is gone): the grant decides
        else
            begin
                if role_name is distinct from current_role_name then
                    perform pg_catalog.set_config('role', role_name, true);
                    current_role_name := role_name;
                end if;
                perform pg_catalog.set_config('request.jwt.claims', (identities -> i -> 1)::text, true);
                can_see := exists (select 1 from %2$s t where %5$s);
            exception when others then
                can_see := false;  -- a policy that errors for this subscriber hides the row from them
                current_role_name := '';
            end;
        end if;
        if can_see then
            visible := visible || i;
        end if;
    end loop;
    perform pg_catalog.set_config('role', 'none', true);
    return next;
end;
$body$;
$fn$, checker, tname, case when rls_enabled then 'true' else 'false' end, tname, pk_cond, may_cond);
    execute body;
    return next;
end;
$$;

alter function realtime.zora_table_info(regclass) owner to supabase_realtime_admin;
revoke all on function realtime.zora_table_info(regclass) from public;
grant execute on function realtime.zora_table_info(regclass) to supabase_realtime_admin;
