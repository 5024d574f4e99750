// The supabase-js flavour of the harness's probes: supabase-js, unchanged, subscribing as the apps do.
//
// One Node process runs several probes, each with its own client (its own socket, as each app
// device has). The first stdin line is the configuration (keys arrive here, never on the command
// line): {"url", "anonKey", "serverOffsetNs", "probes": [{"name", "token", "url" (the API base its socket and
// refetches go to: a fault proxy's, say), "heartbeatMs", "backoffMs": [...], "subs": [{"channel", "table",
// "filter", "event", "changed_at"}], "topics": ["platform-announcements", ...], "privateTopics": [the topics joined as private channels], "presence": "admin-dashboard" |
// null}]}. Channel names come from the harness (harness/records.py, ProbeInfo.pg_channels), so both flavours
// join the same topics. A later "quit" line (or stdin closing) leaves.
//
// After a reconnect each probe does what the apps do: realtime-js rejoins its channels; once every
// postgres_changes channel is live again (system ok), it refetches with supabase-js the rows of its
// subscriptions changed since it last heard from the server, because Supabase Realtime replays nothing.
//
// Every callback first reads process.hrtime.bigint(): CLOCK_MONOTONIC, the clock Python's
// perf_counter_ns reads on Linux, so the harness places these stamps on the run's timeline
// exactly. Out, one JSON object per line: {"t": "<ns>", "probe", "ev": "hello" | "status" | "socket" |
// "system" | "change" | "broadcast" | "presence" | "refetch" | "error", ...}.
import { createClient } from '@supabase/supabase-js'
import ws from 'ws'
import readline from 'node:readline'

const out = (t, o) => process.stdout.write(JSON.stringify({ t: t.toString(), ...o }) + '\n')
const clients = []
const REFETCH_MARGIN_NS = 2_000_000_000n

async function start(cfg, p) {
  const backoff = p.backoffMs ?? [1000, 2000, 5000, 10000]
  const supabase = createClient(p.url ?? cfg.url, cfg.anonKey, {
    accessToken: async () => p.token, // the signed-in user's JWT, as the app's session supplies it
    auth: { persistSession: false, autoRefreshToken: false },
    realtime: {
      transport: ws, params: { eventsPerSecond: 1000 }, heartbeatIntervalMs: p.heartbeatMs ?? 25000,
      reconnectAfterMs: (tries) => backoff[Math.min(Math.max(tries, 1), backoff.length) - 1],
    },
  })
  clients.push(supabase)
  let lastRx = process.hrtime.bigint()
  let opened = 0
  let since = null // while a reconnect waits to refetch: when this probe last heard from the server
  let ready = new Set()
  const pgChannels = new Set(p.subs.map((s) => `realtime:${s.channel}`))
  const heard = () => { lastRx = process.hrtime.bigint() }
  const socket = supabase.realtime.socketAdapter
  socket.onOpen(() => {
    const t = process.hrtime.bigint()
    out(t, { probe: p.name, ev: 'socket', state: 'open' })
    opened += 1
    if (opened > 1) {
      ready = new Set()
      if (since === null) since = lastRx
    }
  })
  socket.onClose(() => {
    const t = process.hrtime.bigint()
    out(t, { probe: p.name, ev: 'socket', state: 'closed' })
    if (opened && since === null) since = lastRx
  })
  supabase.realtime.onHeartbeat((status) => {
    const t = process.hrtime.bigint()
    if (status === 'ok') heard()
    if (status === 'timeout') out(t, { probe: p.name, ev: 'socket', state: 'heartbeat_timeout' })
  })
  const refetch = async (sinceT) => {
    const wallNs = BigInt(Date.now()) * 1_000_000n - (process.hrtime.bigint() - sinceT) - REFETCH_MARGIN_NS +
      BigInt(cfg.serverOffsetNs ?? 0)
    const iso = new Date(Number(wallNs / 1_000_000n)).toISOString()
    for (const s of p.subs) {
      let q = supabase.from(s.table).select('*').gte(s.changed_at ?? 'updated_at', iso).limit(1000)
      if (s.filter) {
        const [col, cond] = [s.filter.slice(0, s.filter.indexOf('=')), s.filter.slice(s.filter.indexOf('=') + 1)]
        const op = cond.slice(0, cond.indexOf('.'))
        q = q.filter(col, op, cond.slice(op.length + 1))
      }
      const { data, error } = await q
      out(process.hrtime.bigint(), { probe: p.name, ev: 'refetch', table: s.table, since_ns: wallNs.toString(),
                                     rows: data ?? [], error: error ? String(error.message ?? error) : null })
    }
  }
  // As an app subscribes after sign-in: the token is on the socket before any channel joins. (Without
  // this await, realtime-js joins with the anon key and sends the user's token only to channels
  // already joined when the token resolves: a channel still joining keeps anon's view.)
  await supabase.realtime.setAuth()
  const watch = (ch) => {
    ch.on('system', {}, (s) => {
      const t = process.hrtime.bigint()
      heard()
      out(t, { probe: p.name, ev: 'system', channel: ch.topic, status: s.status, message: s.message,
               extension: s.extension ?? null })
      if (since !== null && pgChannels.has(ch.topic) && s.extension === 'postgres_changes' && s.status === 'ok') {
        ready.add(ch.topic)
        if ([...pgChannels].every((c) => ready.has(c))) {
          const from = since
          since = null
          refetch(from).catch((e) => out(process.hrtime.bigint(), { probe: p.name, ev: 'error',
                                                                    message: `refetch: ${e?.message ?? e}` }))
        }
      }
    })
    ch.subscribe((status, err) => {
      const t = process.hrtime.bigint()
      if (status === 'SUBSCRIBED') heard() // the server's join reply; an error or a close is the client's own
      out(t, { probe: p.name, ev: 'status', channel: ch.topic, status, error: err ? String(err.message ?? err) : null })
    })
  }
  p.subs.forEach((s) => {
    const ch = supabase.channel(s.channel)
    const filter = { event: s.event ?? '*', schema: 'public', table: s.table }
    if (s.filter) filter.filter = s.filter
    ch.on('postgres_changes', filter, (c) => {
      const t = process.hrtime.bigint()
      heard()
      out(t, { probe: p.name, ev: 'change', channel: ch.topic, table: c.table, type: c.eventType,
               record: c.eventType === 'DELETE' ? null : c.new, old_record: c.old ?? null,
               commit_timestamp: c.commit_timestamp ?? null })
    })
    watch(ch)
  })
  if (p.presence) {
    const ch = supabase.channel(p.presence, { config: { presence: { key: p.name } } })
    for (const kind of ['join', 'leave']) {
      ch.on('presence', { event: kind }, (e) => {
        const t = process.hrtime.bigint()
        heard()
        const metas = kind === 'join' ? e.newPresences : e.leftPresences
        out(t, { probe: p.name, ev: 'presence', channel: ch.topic, kind, key: e.key, meta: metas?.[0] ?? {} })
      })
    }
    watch(ch)
  }
  for (const topic of p.topics ?? []) {
    const ch = supabase.channel(topic, { config: { private: (p.privateTopics ?? []).includes(topic) } })
    ch.on('broadcast', { event: '*' }, (b) => {
      const t = process.hrtime.bigint()
      heard()
      out(t, { probe: p.name, ev: 'broadcast', channel: ch.topic, event: b.event,
               payload: b.payload && typeof b.payload === 'object' ? b.payload : {} })
    })
    watch(ch)
  }
}

async function quit() {
  await Promise.allSettled(clients.map((c) => c.removeAllChannels()))
  process.exit(0)
}

const rl = readline.createInterface({ input: process.stdin })
let cfg = null
rl.on('line', (line) => {
  if (cfg === null) {
    try {
      cfg = JSON.parse(line)
    } catch (e) {
      out(process.hrtime.bigint(), { ev: 'error', message: `bad configuration: ${e?.message ?? e}` })
      return
    }
    for (const p of cfg.probes) {
      start(cfg, p).catch((e) => out(process.hrtime.bigint(), { probe: p.name, ev: 'error', message: String(e?.message ?? e) }))
    }
  } else if (line.trim() === 'quit') {
    quit()
  }
})
rl.on('close', quit)
process.on('SIGTERM', quit)
out(process.hrtime.bigint(), { ev: 'hello', node: process.version })
