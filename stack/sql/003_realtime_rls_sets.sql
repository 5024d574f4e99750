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
