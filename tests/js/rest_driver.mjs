// supabase-js, unchanged, running REST calls given as method chains (JSON on stdin), printing one
// {data, error, count, status} per call. Each call is [[method, ...args], ...] applied to the client,
// e.g. [["from", "users"], ["select", "username, messages(count)"], ["order", "username"]].
// A step {"as": "service"} uses the service-role key; {"schema": "personal"} selects another exposed schema.
import { createClient } from '@supabase/supabase-js'
import ws from 'ws'

const input = JSON.parse(await new Promise((resolve) => {
  let buf = ''
  process.stdin.on('data', (c) => { buf += c })
  process.stdin.on('end', () => resolve(buf))
}))
const opts = { auth: { persistSession: false, autoRefreshToken: false }, realtime: { transport: ws } }
const anon = createClient(input.url, input.anon_key, opts)

const results = []
for (const s of input.steps) {
  try {
    let q = s.schema ? anon.schema(s.schema) : anon
    for (const [method, ...args] of s.chain) q = q[method](...args)
    const r = await q
    results.push({ data: r.data ?? null, error: r.error ? { code: r.error.code ?? null, message: r.error.message, details: r.error.details ?? null, hint: r.error.hint ?? null } : null, count: r.count ?? null, status: r.status })
  } catch (e) {
    results.push({ data: null, error: { code: 'exception', message: String(e?.message ?? e) }, count: null, status: 0 })
  }
}
process.stdout.write(JSON.stringify(results))
process.exit(0)
