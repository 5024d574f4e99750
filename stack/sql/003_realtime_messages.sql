-- Private channels and broadcast from the database, as Supabase Realtime's tenant schema defines them
-- (supabase/realtime priv/repo/tenant_schema/realtime: tables/messages.sql, functions/topic.sql, send.sql,
-- send_binary.sql, broadcast_changes.sql).
--
-- realtime.messages is what private channels are authorized by and what the database broadcasts through:
-- * a join of a private channel is allowed when the joiner's role, with its JWT claims in request.jwt.claims and
--   the channel's topic in realtime.topic(), may SELECT a row of that topic (extension 'broadcast' to receive
--   broadcasts, 'presence' to receive presence), and it may send what it may INSERT (stack/realtime/authorization.py);
-- * a committed row with extension 'broadcast' is delivered from the WAL to the channels of its topic, private or
--   public as the row says (stack/realtime/messages.py), and rows of private topics are replayed on join.
-- Upstream partitions the table by day and drops partitions older than 72 hours; here it is one plain table
-- (nothing is dropped: a long-lived database keeps every message).

create table if not exists realtime.messages (
    topic text not null,
    extension text not null,
    payload jsonb,
    event text,
    private boolean default false,
    updated_at timestamp without time zone not null default (now() at time zone 'utc'),
    inserted_at timestamp without time zone not null default (now() at time zone 'utc'),
    id uuid not null default gen_random_uuid(),
    binary_payload bytea,
    constraint messages_payload_exclusive check (payload is null or binary_payload is null),
    constraint messages_pkey primary key (id, inserted_at)
);
alter table realtime.messages enable row level security;
alter table realtime.messages owner to supabase_realtime_admin;
create index if not exists messages_inserted_at_topic_index on realtime.messages (inserted_at desc, topic)
    where extension = 'broadcast' and private is true;
grant insert, select, update on table realtime.messages to anon, authenticated, service_role;

-- The topic of the channel being authorized (set by the realtime server, and by realtime.send for INSERT policies).
create or replace function realtime.topic() returns text language sql stable as $$
    select nullif(current_setting('realtime.topic', true), '')::text;
$$;
alter function realtime.topic() owner to supabase_realtime_admin;
grant execute on function realtime.topic() to anon, authenticated, service_role;

-- A broadcast from the database: one row of realtime.messages. Errors (an INSERT policy refusing the caller)
-- become a warning, and the message is not sent, as upstream.
create or replace function realtime.send(payload jsonb, event text, topic text, private boolean default true)
returns void language plpgsql as $$
declare
    generated_id uuid;
    final_payload jsonb;
begin
    begin
        generated_id := gen_random_uuid();
        if payload ? 'id' then
            final_payload := payload;
        else
            final_payload := jsonb_set(payload, '{id}', to_jsonb(generated_id));
        end if;
        execute format('set local realtime.topic to %L', topic);
        insert into realtime.messages (id, payload, event, topic, private, extension)
        values (generated_id, final_payload, event, topic, private, 'broadcast');
    exception when others then
        raise warning 'WarnSendingBroadcastMessage: %', sqlerrm;
    end;
end;
$$;
alter function realtime.send(jsonb, text, text, boolean) owner to supabase_realtime_admin;

-- The same with a binary payload: vsn 2.0.0 clients receive it as a binary frame, vsn 1.0.0 clients not at all.
create or replace function realtime.send_binary(payload bytea, event text, topic text, private boolean default true)
returns void language plpgsql as $$
declare
    generated_id uuid;
begin
    begin
        generated_id := gen_random_uuid();
        execute format('set local realtime.topic to %L', topic);
        insert into realtime.messages (id, binary_payload, event, topic, private, extension)
        values (generated_id, payload, event, topic, private, 'broadcast');
    exception when others then
        raise warning 'WarnSendingBroadcastMessage: %', sqlerrm;
    end;
end;
$$;
alter function realtime.send_binary(bytea, text, text, boolean) owner to supabase_realtime_admin;

-- For row triggers: the change as {old_record, record, operation, table, schema}, sent on a private topic.
create or replace function realtime.broadcast_changes(
    topic_name text, event_name text, operation text, table_name text, table_schema text,
    new record, old record, level text default 'ROW')
returns void language plpgsql as $$
declare
    row_data jsonb := '{}'::jsonb;
begin
    if level = 'STATEMENT' then
        raise exception 'function can only be triggered for each row, not for each statement';
    end if;
    if operation = 'INSERT' or operation = 'UPDATE' or operation = 'DELETE' then
        row_data := jsonb_build_object('old_record', old, 'record', new, 'operation', operation,
                                       'table', table_name, 'schema', table_schema);
        perform realtime.send(row_data, event_name, topic_name);
    else
        raise exception 'Unexpected operation type: %', operation;
    end if;
exception when others then
    raise exception 'Failed to process the row: %', sqlerrm;
end;
$$;
alter function realtime.broadcast_changes(text, text, text, text, text, record, record, text)
    owner to supabase_realtime_admin;
grant execute on function realtime.send(jsonb, text, text, boolean), realtime.send_binary(bytea, text, text, boolean),
    realtime.broadcast_changes(text, text, text, text, text, record, record, text)
    to anon, authenticated, service_role;
