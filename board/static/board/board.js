// The staff board: figures from GET /api/realtime/board, refreshed whenever the realtime socket
// (the bundled @supabase/realtime-js) says something changed in a watched group, and every 15 s.
(() => {
  'use strict'
  const config = JSON.parse(document.getElementById('board-config').textContent)
  const MAX_CHANNELS = 9 // the gateway allows 10 per connection; one is the role topic
  const STATUS_ORDER = ['present', 'late', 'absent', 'excused', 'sick', 'emergency', 'early_dismissal', 'partial']
  let token = config.token
  let pending = null
  let lastSnapshot = null

  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag)
    for (const [key, value] of Object.entries(attrs)) {
      if (key === 'class') node.className = value
      else node.setAttribute(key, value)
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined) node.append(child.nodeType ? child : String(child))
    }
    return node
  }
  const time = (iso) => new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' })

  function card(label, value, state, hint) {
    return el('div', { class: `card ${state}` }, el('div', { class: 'label' }, label), el('div', { class: 'value' }, value),
      hint ? el('div', { class: 'hint' }, hint) : null)
  }

  function renderHealth(p) {
    const latency = p.p99DeliveryMs === null ? (p.p99OverMs ? `> ${p.p99OverMs} ms` : 'no deliveries') : `≤ ${p.p99DeliveryMs} ms`
    const latencyState = p.p99DeliveryMs === null ? (p.p99OverMs ? 'bad' : 'idle') : p.p99DeliveryMs <= 500 ? 'good' : 'bad'
    document.getElementById('health').replaceChildren(
      card('Listener', p.listenerActive ? 'active' : 'down', p.listenerActive ? 'good' : 'bad', 'fans stored events out'),
      card('Backlog', p.backlog, p.backlog <= 100 ? 'good' : 'bad', p.backlog ? `oldest ${p.oldestSeconds} s` : 'nothing waiting'),
      card('p99 delivery', latency, latencyState, `${p.deliveriesLast5Min} deliveries, last 5 min`),
    )
  }

  function renderGroup(g) {
    const a = g.attendance
    const marked = STATUS_ORDER.reduce((sum, s) => sum + (a[s] || 0), 0)
    const bar = el('div', { class: 'bar', title: `${marked} of ${a.enrolled} marked` },
      STATUS_ORDER.filter((s) => a[s]).map((s) =>
        el('span', { class: `seg ${s}`, style: `flex-grow: ${a[s]}` }, `${a[s]}`)))
    const counts = el('ul', { class: 'counts' },
      STATUS_ORDER.filter((s) => a[s]).map((s) => el('li', { 'data-status': s }, el('b', {}, a[s]), ` ${s.replace('_', ' ')}`)))
    const marking = g.marking.length
      ? el('p', { class: 'marking' }, '✎ Marking now: ', g.marking.map((m) => m.name).join(', '))
      : el('p', { class: 'muted' }, 'Nobody is marking attendance')
    const online = g.online.length
      ? el('ul', { class: 'people' }, g.online.map((p) => el('li', { class: p.role, title: p.activity || '' }, p.name)))
      : el('p', { class: 'muted' }, 'Nobody online')
    return el('article', { class: 'group', 'data-group': g.id },
      el('header', {}, el('h3', {}, g.name), el('span', { class: 'muted' }, g.subject !== g.name ? g.subject : '')),
      el('p', { class: 'summary' }, el('b', { class: 'marked' }, marked), ` of ${a.enrolled} marked today`),
      bar, counts, marking,
      el('h4', {}, `Online (${g.online.length})`), online)
  }

  function renderEvents(events) {
    document.getElementById('events').replaceChildren(...events.map((e) => el('tr', {},
      el('td', {}, e.seq), el('td', {}, e.event), el('td', { class: `prio ${e.priority}` }, e.priority),
      el('td', {}, el('span', { class: `status ${e.deliveryStatus}` }, e.deliveryStatus)),
      el('td', {}, e.target), el('td', {}, time(e.createdAt)))))
  }

  function render(s) {
    lastSnapshot = s
    document.getElementById('school').textContent = `${s.organization.name} · staff board`
    document.getElementById('today').textContent = s.date
    renderHealth(s.pipeline)
    document.getElementById('groups').replaceChildren(...s.groups.map(renderGroup))
    renderEvents(s.events)
    document.getElementById('updated').textContent = `Updated ${new Date().toLocaleTimeString()}`
    document.body.dataset.updated = String(Date.now())
  }

  async function refresh() {
    const response = await fetch(config.snapshotUrl, { headers: { Authorization: `Bearer ${token}` } })
    if (response.status === 401) { await renewToken(); return refresh() }
    if (!response.ok) throw new Error(`board snapshot: HTTP ${response.status}`)
    render(await response.json())
  }

  // Several changes in a burst (a teacher marking a class) cost one fetch.
  function refreshSoon() {
    if (pending) return
    pending = setTimeout(() => { pending = null; refresh().catch(console.error) }, 150)
  }

  async function renewToken() {
    const response = await fetch(config.tokenUrl, { credentials: 'same-origin' })
    if (!response.ok) { window.location = '/board/login/?next=/board/'; return }
    token = (await response.json()).access
    client.setAuth(token)
  }

  function setLive(state) {
    const live = document.getElementById('live')
    live.className = `live ${state === 'SUBSCRIBED' ? 'on' : 'off'}`
    live.textContent = state === 'SUBSCRIBED' ? 'live' : state.toLowerCase()
    document.body.dataset.live = state
  }

  const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws'
  const client = new RealtimeJS.RealtimeClient(`${scheme}://${window.location.host}/realtime/v1`, {
    params: { apikey: token },
  })
  client.setAuth(token)
  let subscribed = 0
  const watched = config.topics.slice(0, MAX_CHANNELS)
  const onStatus = (status) => {
    if (status === 'SUBSCRIBED') subscribed += 1
    setLive(subscribed >= watched.length + 1 ? 'SUBSCRIBED' : status)
    if (status === 'SUBSCRIBED') refreshSoon()
  }
  for (const topic of watched) {
    const groupId = topic.split(':group_')[1]
    client.channel(topic, { config: { broadcast: { self: false } } })
      .on('broadcast', { event: '*' }, refreshSoon)
      .on('presence', { event: 'sync' }, refreshSoon)
      .on('postgres_changes', { event: '*', schema: 'public', table: 'attendance', filter: `group_id=eq.${groupId}` }, refreshSoon)
      .subscribe(onStatus)
  }
  client.channel(config.roleTopic, { config: { broadcast: { self: false } } })
    .on('broadcast', { event: '*' }, refreshSoon)
    .subscribe(onStatus)

  refresh().catch(console.error)
  setInterval(() => refresh().catch(console.error), 15000)
  setInterval(() => renewToken().catch(console.error), 30 * 60 * 1000)
  window.harryBoard = { refresh, snapshot: () => lastSnapshot }
})()
