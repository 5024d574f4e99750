// supabase-js, unchanged, running a script of auth and REST steps (JSON on stdin) and printing
// one JSON result per step. The Python twin is tests/stack/test_client_parity.py::run_py.
import { createClient } from '@supabase/supabase-js'
import ws from 'ws'

const input = JSON.parse(await new Promise((resolve) => {
  let buf = ''
  process.stdin.on('data', (c) => { buf += c })
  process.stdin.on('end', () => resolve(buf))
}))
const opts = { auth: { persistSession: false, autoRefreshToken: false }, realtime: { transport: ws } }
const client = createClient(input.url, input.anon_key, opts)
const admin = createClient(input.url, input.service_key, opts)

function applyFilters(q, filters) {
  for (const [method, ...args] of filters ?? []) {
    if (method === 'not') q = q.not(args[0], args[1], args[2])
    else if (method === 'or') q = q.or(args[0])
    else if (method === 'in') q = q.in(args[0], args[1])
    else if (method === 'is') q = q.is(args[0], args[1])
    else if (method === 'order') q = q.order(args[0], { ascending: args[1] !== 'desc' })
    else if (method === 'range') q = q.range(args[0], args[1])
    else if (method === 'limit') q = q.limit(args[0])
    else q = q[method](...args)
  }
  return q
}

function err(e) {
  return e ? { code: e.code ?? e.status ?? null, message: e.message } : null
}

async function step(s) {
  const db = s.as === 'service' ? admin : client
  switch (s.op) {
    case 'signUp': { const r = await client.auth.signUp({ email: s.email, password: s.password, options: { data: s.data } }); return { data: r.data?.user ? { email: r.data.user.email, user_metadata: r.data.user.user_metadata, has_session: !!r.data.session } : null, error: err(r.error) } }
    case 'signIn': { const r = await client.auth.signInWithPassword({ email: s.email, password: s.password }); return { data: r.data?.user ? { email: r.data.user.email, role: r.data.user.role } : null, error: err(r.error) } }
    case 'refresh': { const before = (await client.auth.getSession()).data.session?.refresh_token; const r = await client.auth.refreshSession(); return { data: r.data?.session ? { rotated: r.data.session.refresh_token !== before } : null, error: err(r.error) } }
    case 'getUser': { const r = await client.auth.getUser(); return { data: r.data?.user ? { email: r.data.user.email } : null, error: err(r.error) } }
    case 'updateUser': { const r = await client.auth.updateUser({ data: s.data }); return { data: r.data?.user ? { user_metadata: r.data.user.user_metadata } : null, error: err(r.error) } }
    case 'signOut': { const r = await client.auth.signOut(); return { data: null, error: err(r.error) } }
    case 'adminCreate': { const r = await admin.auth.admin.createUser({ email: s.email, password: s.password, email_confirm: true }); return { data: r.data?.user ? { email: r.data.user.email, id: r.data.user.id } : null, error: err(r.error) } }
    case 'adminList': { const r = await admin.auth.admin.listUsers({ page: 1, perPage: 1000 }); return { data: { includes: (r.data?.users ?? []).some((u) => u.email === s.email) }, error: err(r.error) } }
    case 'adminDelete': { const r = await admin.auth.admin.deleteUser(s.id); return { data: null, error: err(r.error) } }
    case 'select': {
      let q = db.from(s.table).select(s.columns ?? '*', { count: s.count, head: s.head })
      q = applyFilters(q, s.filters)
      if (s.single) q = q.single()
      if (s.maybeSingle) q = q.maybeSingle()
      const r = await q
      return { data: r.data, error: err(r.error), count: r.count ?? null, status: r.status }
    }
    case 'insert': case 'upsert': {
      let q = s.op === 'insert' ? db.from(s.table).insert(s.values) : db.from(s.table).upsert(s.values, { onConflict: s.onConflict })
      if (s.select) q = q.select(s.select)
      const r = await q
      return { data: r.data, error: err(r.error), status: r.status }
    }
    case 'update': case 'delete': {
      let q = s.op === 'update' ? db.from(s.table).update(s.values) : db.from(s.table).delete()
      q = applyFilters(q, s.filters)
      if (s.select) q = q.select(s.select)
      const r = await q
      return { data: r.data, error: err(r.error), status: r.status }
    }
    case 'rpc': { const r = await db.rpc(s.fn, s.args); return { data: r.data, error: err(r.error), status: r.status } }
    default: return { data: null, error: { code: 'driver', message: `unknown op ${s.op}` } }
  }
}

const results = []
for (const s of input.steps) {
  try { results.push(await step(s)) } catch (e) { results.push({ data: null, error: { code: 'exception', message: String(e?.message ?? e) } }) }
}
process.stdout.write(JSON.stringify(results))
process.exit(0)
