// The supabase-js flavour of the harness's probes: supabase-js, unchanged, subscribing as the apps do.
//
// One Node process runs several probes, each with its own client (its own socket, as each app
// device has). The first stdin line is the configuration (keys arrive here, never on the command
// line): {"url", "anonKey", "probes": [{"name", "token", "subs": [{"channel", "table", "filter", "event"}],
// "topics": ["platform-announcements", ...], "presence": "admin-dashboard" | null}]}. Channel names come from
// the harness (harness/probes.py, ``channels``), so both flavours join the same topics. A later "quit" line
// (or stdin closing) leaves.
//
// Every callback first reads process.hrtime.bigint(): CLOCK_MONOTONIC, the clock Python's
// perf_counter_ns reads on Linux, so the harness places these stamps on the run's timeline
// exactly. Out, one JSON object per line: {"t": "<ns>", "probe", "ev": "hello" | "status" |
// "system" | "change" | "broadcast" | "presence" | "error", ...}.
import { createClient } from '@supabase/supabase-js'
import ws from 'ws'
import readline from 'node:readline'

const out = (t, o) => process.stdout.write(JSON.stringify({ t: t.toString(), ...o }) + '\n')
const clients = []

async function start(cfg, p) {
  const supabase = createClient(cfg.url, cfg.anonKey, {
    accessToken: async () => p.token, // the signed-in user's JWT, as the app's session supplies it
    auth: { persistSession: false, autoRefreshToken: false },
    realtime: { transport: ws, params: { eventsPerSecond: 1000 } },
  })
  clients.push(supabase)
  // As an app subscribes after sign-in: the token is on the socket before any channel joins. (Without
  // this await, realtime-js joins with the anon key and sends the user's token only to channels
  // already joined when the token resolves: a channel still joining keeps anon's view.)
  await supabase.realtime.setAuth()
  const watch = (ch) => {
    ch.on('system', {}, (s) => {
      const t = process.hrtime.bigint()
      out(t, { probe: p.name, ev: 'system', channel: ch.topic, status: s.status, message: s.message,
               extension: s.extension ?? null })
    })
    ch.subscribe((status, err) => {
      const t = process.hrtime.bigint()
      out(t, { probe: p.name, ev: 'status', channel: ch.topic, status, error: err ? String(err.message ?? err) : null })
    })
  }
  p.subs.forEach((s) => {
    const ch = supabase.channel(s.channel)
    const filter = { event: s.event ?? '*', schema: 'public', table: s.table }
    if (s.filter) filter.filter = s.filter
    ch.on('postgres_changes', filter, (c) => {
      const t = process.hrtime.bigint()
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
        const metas = kind === 'join' ? e.newPresences : e.leftPresences
        out(t, { probe: p.name, ev: 'presence', channel: ch.topic, kind, key: e.key, meta: metas?.[0] ?? {} })
      })
    }
    watch(ch)
  }
  for (const topic of p.topics ?? []) {
    const ch = supabase.channel(topic)
    ch.on('broadcast', { event: '*' }, (b) => {
      const t = process.hrtime.bigint()
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
