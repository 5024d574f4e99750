-- Set-based RLS checks (stack/realtime/rls_sets.py).
--
-- For a table whose SELECT policies can be rewritten safely, the endpoint generates a second checker,
-- realtime."zora_set_<oid>_<hash>", that decides for every subscriber identity of a change in one query:
-- the policies' calls of auth.uid(), auth.jwt(), auth.role(), auth.email() and
-- current_setting('request.jwt.claims') read each identity's claims from a set of rows. That query runs
-- as zora_rls_sets, which reads every row (pg_read_all_data, BYPASSRLS) so that only the rewritten
-- policies decide; the role grants, memberships and function privileges of each subscriber's role are
-- checked in the query itself. Nothing else runs as this role.

do $$
begin
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'zora_rls_sets') then
        create role zora_rls_sets nologin inherit bypassrls;
    end if;
end;
$$;
grant pg_read_all_data to zora_rls_sets;
grant zora_rls_sets to supabase_realtime_admin;

-- Which identities the planner itself fails for: planning a query on the table under an identity's role and
-- claims evaluates stable expressions of the claims (e.g. auth.uid()'s cast to uuid, for selectivity), and
-- an error there hides the row from that identity whatever the row holds, before any policy short-circuits.
-- The set-based query cannot see such errors (its claims are columns), so the endpoint probes each new
-- identity once per set checker and sends those that fail to the per-identity checker. Returns their indices.
create or replace function realtime.zora_plan_probe(entity regclass, identities jsonb) returns int[]
language plpgsql set search_path = '' as $$
declare
    failed int[] := '{}';
    n int := coalesce(pg_catalog.jsonb_array_length(identities), 0);
begin
    for i in 0 .. n - 1 loop
        begin
            perform pg_catalog.set_config('role', identities -> i ->> 0, true);
            perform pg_catalog.set_config('request.jwt.claims', (identities -> i -> 1)::text, true);
            execute pg_catalog.format('explain select 1 from %s', entity);
        exception when insufficient_privilege then
            null;  -- privileges and memberships are checked by the set query itself, on every change
        when others then
            failed := failed || i;
        end;
    end loop;
    perform pg_catalog.set_config('role', 'none', true);
    return failed;
end;
$$;
alter function realtime.zora_plan_probe(regclass, jsonb) owner to supabase_realtime_admin;
