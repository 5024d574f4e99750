// supabase-js, unchanged, driven over stdin/stdout by pytest (one JSON object per line each way).
// Commands: {"op":"channel","name","topic","config","pg":[{event,schema,table,filter}], "broadcast":[events],
//            "presence": bool}, {"op":"setAuth","token"}, {"op":"send","name","event","payload"},
//            {"op":"track","name","payload"}, {"op":"untrack","name"}, {"op":"remove","name"}, {"op":"quit"}.
// Events out: {"ev":"status"|"change"|"system"|"broadcast"|"presence"|"reply"|"error", "name", ...}.
import { createClient } from '@supabase/supabase-js'
import ws from 'ws'
import readline from 'node:readline'

const [url, key] = process.argv.slice(2)
// The user's JWT reaches realtime through the documented `accessToken` option (as with third-party
// auth); until one is set, the anon key is the token, as for a signed-out app.
let currentToken = key
const supabase = createClient(url, key, {
  accessToken: async () => currentToken,
  realtime: { transport: ws, params: { eventsPerSecond: 1000 }, reconnectAfterMs: (n) => [200, 400, 800][n - 1] ?? 1000 },
})
const channels = new Map()
// a binary broadcast (vsn 2.0.0) arrives as an ArrayBuffer: written out as {binary_hex} so the test can read it
const plain = (p) => {
  const v = p?.payload
  if (v instanceof ArrayBuffer) return { ...p, payload: { binary_hex: Buffer.from(v).toString('hex') } }
  if (ArrayBuffer.isView(v)) return { ...p, payload: { binary_hex: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex') } }
  return p
}
const out = (o) => process.stdout.write(JSON.stringify({ t: Number(process.hrtime.bigint()), ...o }) + '\n')

async function handle(cmd) {
  switch (cmd.op) {
    case 'channel': {
      const ch = supabase.channel(cmd.topic, { config: cmd.config ?? {} })
      for (const pg of cmd.pg ?? []) {
        ch.on('postgres_changes', pg, (p) => out({ ev: 'change', name: cmd.name, payload: p }))
      }
      for (const event of cmd.broadcast ?? []) {
        ch.on('broadcast', { event }, (p) => out({ ev: 'broadcast', name: cmd.name, payload: plain(p) }))
      }
      if (cmd.presence) {
        ch.on('presence', { event: 'sync' }, () => out({ ev: 'presence', name: cmd.name, kind: 'sync', state: ch.presenceState() }))
        ch.on('presence', { event: 'join' }, (p) => out({ ev: 'presence', name: cmd.name, kind: 'join', key: p.key }))
        ch.on('presence', { event: 'leave' }, (p) => out({ ev: 'presence', name: cmd.name, kind: 'leave', key: p.key }))
      }
      ch.on('system', {}, (p) => out({ ev: 'system', name: cmd.name, payload: p }))
      ch.subscribe((status, err) => out({ ev: 'status', name: cmd.name, status, error: err ? String(err.message) : null }))
      channels.set(cmd.name, ch)
      break
    }
    case 'setAuth':
      currentToken = cmd.token
      await supabase.realtime.setAuth()
      out({ ev: 'reply', op: 'setAuth' })
      break
    case 'send':
      out({ ev: 'reply', op: 'send', name: cmd.name, result: await channels.get(cmd.name).send({ type: 'broadcast', event: cmd.event, payload: cmd.payload }) })
      break
    case 'track':
      out({ ev: 'reply', op: 'track', name: cmd.name, result: await channels.get(cmd.name).track(cmd.payload) })
      break
    case 'untrack':
      out({ ev: 'reply', op: 'untrack', name: cmd.name, result: await channels.get(cmd.name).untrack() })
      break
    case 'remove':
      await supabase.removeChannel(channels.get(cmd.name))
      out({ ev: 'reply', op: 'remove', name: cmd.name })
      break
    case 'quit':
      await supabase.removeAllChannels()
      out({ ev: 'reply', op: 'quit' })
      process.exit(0)
  }
}

const rl = readline.createInterface({ input: process.stdin })
// one command at a time, in order (setAuth must finish before the next channel subscribes)
let queue = Promise.resolve()
rl.on('line', (line) => {
  queue = queue.then(() => handle(JSON.parse(line))).catch((e) => out({ ev: 'error', message: String(e?.message ?? e) }))
})
rl.on('close', () => process.exit(0))
out({ ev: 'ready' })
