// The browser flavour of the harness's probes: the page of one tab. It subscribes with supabase-js (the npm
// package's UMD build) exactly as harness/js/probes.mjs does under Node, and as the vendor portal's
// realtime provider does (001 §4.5.2): the app's channels, the app's refetch after a rejoin. It also does what
// a person sees: it shows each change in the DOM and a Live / Reconnecting / Offline indicator driven by the
// client's connection state (000 §3.1 Task 4).
//
// The driver (harness/browser_driver.py) calls window.zoraStart(cfg) once: cfg = {url, anonKey, serverOffsetNs,
// indicator: "state" | "always-live", probe: {name, token, url, heartbeatMs, backoffMs, subs, topics,
// presence}} (the token arrives here, never in the page's URL). Every observation goes out through
// window.zoraOut (a Playwright binding) as the Node probes' lines, stamped with performance.now() (ms, page
// clock); the driver maps page time onto the harness's monotonic clock. A change also carries `screen` (when
// the DOM mutation that shows it was observed) and `frame` (the next animation frame after it: when it was
// painted; null when no frame came within 2 s, as in a tab Chromium does not render).
(() => {
  const now = () => performance.now()
  const out = (t, o) => window.zoraOut({ t, ...o })
  const REFETCH_MARGIN_MS = 2000
  const FRAME_WAIT_MS = 2000
  const LABEL = { Live: 'Live', Reconnecting: 'Reconnecting...', Offline: 'Offline' }

  const statusEl = document.getElementById('status')
  let shown = null
  new MutationObserver(() => {
    const t = now()
    const state = statusEl.dataset.state
    if (state !== shown) {
      shown = state
      out(t, { probe: window.zoraProbe, ev: 'indicator', state, visibility: document.visibilityState })
    }
  }).observe(statusEl, { attributes: true, childList: true, characterData: true, subtree: true })

  const show = (state) => {
    if (statusEl.dataset.state === state) return
    statusEl.dataset.state = state
    statusEl.textContent = LABEL[state]
  }

  // each change's list item: the MutationObserver stamps its insertion, the next frame its paint
  const pending = new Map() // element -> the change line waiting for its screen and frame times
  new MutationObserver((muts) => {
    const t = now()
    for (const m of muts) {
      const nodes = [m.target, m.target.parentElement, ...m.addedNodes]
      for (const n of nodes) {
        const line = pending.get(n)
        if (!line || line.screen !== undefined) continue
        line.screen = t
        let sent = false
        const send = (frame) => {
          if (sent) return
          sent = true
          pending.delete(n)
          out(line.t, { ...line.body, screen: line.screen, frame })
        }
        requestAnimationFrame(() => send(now()))
        setTimeout(() => send(null), FRAME_WAIT_MS)
      }
    }
  }).observe(document.body, { childList: true, subtree: true, characterData: true, attributes: true })

  const lists = { orders: 'orders', products: 'products' }
  const render = (t, body, row) => {
    const list = document.getElementById(lists[body.table] ?? 'other')
    const id = row && row.id !== undefined ? String(row.id) : null
    let li = id ? list.querySelector(`li[data-id="${CSS.escape(id)}"]`) : null
    const text = `${body.table} ${body.type} ${id ?? ''} ${row?.status ?? ''}`
    if (li && body.type !== 'DELETE') {
      pending.set(li, { t, body })
      li.textContent = text // a status change: the same row, shown anew
    } else {
      li = document.createElement('li')
      if (id) li.dataset.id = id
      li.textContent = text
      pending.set(li, { t, body })
      list.prepend(li)
    }
    while (list.children.length > 200) list.lastElementChild.remove() // bounded: a probe, not an app
  }

  window.zoraStart = async (cfg) => {
    const p = cfg.probe
    window.zoraProbe = p.name
    document.getElementById('app').textContent = p.name
    const fake = cfg.indicator === 'always-live'
    const backoff = p.backoffMs ?? [1000, 2000, 5000, 10000]
    const supabase = window.supabase.createClient(p.url ?? cfg.url, cfg.anonKey, {
      accessToken: async () => p.token,
      auth: { persistSession: false, autoRefreshToken: false },
      realtime: {
        params: { eventsPerSecond: 1000 }, heartbeatIntervalMs: p.heartbeatMs ?? 25000,
        reconnectAfterMs: (tries) => backoff[Math.min(Math.max(tries, 1), backoff.length) - 1],
      },
    })
    window.zoraClient = supabase
    // the indicator, from the client's connection state as the app's connection store keeps it: Live when the
    // socket is open and every channel subscribed, Reconnecting once it was live and is not, Offline before
    // the first connection or when the browser says it is offline
    let socketOpen = false
    let everLive = false
    const channelState = new Map()
    const indicate = () => {
      if (fake) return show('Live')
      const live = socketOpen && channelState.size > 0 && [...channelState.values()].every((s) => s === 'SUBSCRIBED')
      if (live) everLive = true
      show(!navigator.onLine ? 'Offline' : live ? 'Live' : everLive ? 'Reconnecting' : 'Offline')
    }
    window.addEventListener('online', indicate)
    window.addEventListener('offline', indicate)

    let lastRx = now()
    let opened = 0
    let since = null
    let ready = new Set()
    const pgChannels = new Set(p.subs.map((s) => `realtime:${s.channel}`))
    const heard = () => { lastRx = now() }
    const socket = supabase.realtime.socketAdapter ?? supabase.realtime
    socket.onOpen(() => {
      const t = now()
      out(t, { probe: p.name, ev: 'socket', state: 'open' })
      socketOpen = true
      opened += 1
      if (opened > 1) {
        ready = new Set()
        if (since === null) since = lastRx
      }
      indicate()
    })
    socket.onClose(() => {
      const t = now()
      out(t, { probe: p.name, ev: 'socket', state: 'closed' })
      socketOpen = false
      if (opened && since === null) since = lastRx
      indicate()
    })
    supabase.realtime.onHeartbeat((status) => {
      const t = now()
      if (status === 'ok') heard()
      if (status === 'timeout') {
        out(t, { probe: p.name, ev: 'socket', state: 'heartbeat_timeout' })
        socketOpen = false
        indicate()
      }
    })
    const refetch = async (sinceT) => {
      const wallMs = Date.now() - (now() - sinceT) - REFETCH_MARGIN_MS + Number(cfg.serverOffsetNs ?? 0) / 1e6
      const iso = new Date(wallMs).toISOString()
      for (const s of p.subs) {
        let q = supabase.from(s.table).select('*').gte(s.changed_at ?? 'updated_at', iso).limit(1000)
        if (s.filter) {
          const [col, cond] = [s.filter.slice(0, s.filter.indexOf('=')), s.filter.slice(s.filter.indexOf('=') + 1)]
          const op = cond.slice(0, cond.indexOf('.'))
          q = q.filter(col, op, cond.slice(op.length + 1))
        }
        const { data, error } = await q
        out(now(), { probe: p.name, ev: 'refetch', table: s.table, since_ns: String(Math.round(wallMs) * 1e6),
                     rows: data ?? [], error: error ? String(error.message ?? error) : null })
      }
    }
    await supabase.realtime.setAuth()
    const watch = (ch) => {
      channelState.set(ch.topic, 'joining')
      ch.on('system', {}, (s) => {
        const t = now()
        heard()
        out(t, { probe: p.name, ev: 'system', channel: ch.topic, status: s.status, message: s.message,
                 extension: s.extension ?? null })
        if (since !== null && pgChannels.has(ch.topic) && s.extension === 'postgres_changes' && s.status === 'ok') {
          ready.add(ch.topic)
          if ([...pgChannels].every((c) => ready.has(c))) {
            const from = since
            since = null
            refetch(from).catch((e) => out(now(), { probe: p.name, ev: 'error', message: `refetch: ${e?.message ?? e}` }))
          }
        }
      })
      ch.subscribe((status, err) => {
        const t = now()
        if (status === 'SUBSCRIBED') heard()
        channelState.set(ch.topic, status)
        out(t, { probe: p.name, ev: 'status', channel: ch.topic, status, error: err ? String(err.message ?? err) : null })
        indicate()
      })
    }
    p.subs.forEach((s) => {
      const ch = supabase.channel(s.channel)
      const filter = { event: s.event ?? '*', schema: 'public', table: s.table }
      if (s.filter) filter.filter = s.filter
      ch.on('postgres_changes', filter, (c) => {
        const t = now()
        heard()
        const record = c.eventType === 'DELETE' ? null : c.new
        render(t, { probe: p.name, ev: 'change', channel: ch.topic, table: c.table, type: c.eventType, record,
                    old_record: c.old ?? null, commit_timestamp: c.commit_timestamp ?? null,
                    visibility: document.visibilityState }, record ?? c.old)
      })
      watch(ch)
    })
    if (p.presence) {
      const ch = supabase.channel(p.presence, { config: { presence: { key: p.name } } })
      for (const kind of ['join', 'leave']) {
        ch.on('presence', { event: kind }, (e) => {
          const t = now()
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
        const t = now()
        heard()
        out(t, { probe: p.name, ev: 'broadcast', channel: ch.topic, event: b.event,
                 payload: b.payload && typeof b.payload === 'object' ? b.payload : {} })
      })
      watch(ch)
    }
    indicate()
  }
  window.zoraQuit = async () => { if (window.zoraClient) await window.zoraClient.removeAllChannels() }
})()
