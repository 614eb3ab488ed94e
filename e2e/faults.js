// The fault suite (`make test-faults`, README "Reliability"): a real server on loopback — the web
// process as the Procfile serves it (uvicorn, websockets-sansio), two listeners (`manage.py
// realtime_listen`, one active, one standby), a Redis of its own that the suite kills and pauses,
// the machine's PostgreSQL (a database of its own) — and 24 unmodified realtime-js clients on two
// schools' attendance topics, while one writer commits attendance changes at a steady rate.
//
// Faults, one after the other, each with the writer running: listener SIGKILL (repeated),
// active-listener failover, Redis killed and restarted, Redis paused (SIGSTOP) 10 s, the app's
// PostgreSQL backends terminated, the web process SIGKILLed and restarted (every client
// reconnecting at once), clients dropping for 10 s and rejoining with replay, clients closing
// mid-send and mid-join (then reconnecting at once). For each fault it prints the events written,
// the frames expected (events x sockets of the topic), received, lost, duplicated and out of order
// (a frame whose seq is below one its socket already had), and the recovery time (from the end of
// the fault until every socket has a newer event than any socket had then).
//
// Targets (the run exits 1 when one is missed): 0 lost, 0 duplicated, 0 out of order on every
// socket; no process exits by itself; listener failover under 2 s; after a web restart every client
// is accepted at once (no join refused); a client that closed mid-send or mid-join is never refused
// when it reconnects; every fault recovers. The clients keep `replay.after_id` at the last event
// they saw, as an app would, so a rejoin asks for exactly the rest.
//
// Environment: FAULTS_RATE (changes per second, default 70), FAULTS_WEB_PORT / FAULTS_REDIS_PORT
// (default: free ports), FAULTS_REDIS_SERVER (the redis-server binary), FAULTS_LOGS (a directory to keep every process's output in), FAULTS_ONLY (below), DB_NAME
// (the database is `<DB_NAME>_faults`, dropped at the end).
'use strict'

const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const readline = require('node:readline')
const WebSocket = require('ws')
const { RealtimeClient } = require('@supabase/realtime-js')
const { createHarness, waitFor, topics, PYTHON, ROOT } = require('./harness')

const RATE = Number(process.env.FAULTS_RATE || 70)
const SOCKETS_PER_USER = 4 // of the 5 a user may hold: one to spare, as a phone and a tablet would
const FAILOVER_TARGET_MS = 2000
const RECONNECT_TARGET_MS = 5000 // after a web restart: every channel joined again, none refused
const RECOVERY_BOUND_MS = 15000
const MIN_SOCKETS = 20
const MIN_EVENTS = 10000
// FAULTS_ONLY: a pattern; only the faults whose name matches run (the steady window always does),
// and the minimums of sockets and changes do not apply. For working on one fault.
const ONLY = process.env.FAULTS_ONLY ? new RegExp(`${process.env.FAULTS_ONLY}|^steady`) : null

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const started = Date.now()
const step = (what) => console.error(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${what}`)
const logDir = process.env.FAULTS_LOGS || fs.mkdtempSync(path.join(os.tmpdir(), 'harry-faults-'))
fs.mkdirSync(logDir, { recursive: true })

const procs = []
const clients = []
const rows = []
let h
let probe
const stack = {} // redis, redisPort, listeners, web
let exitCode = 0

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

// A child process run as a supervisor would: restarted when it exits. An exit the suite did not
// cause (`kill`/`stop`) counts against the fault that was running (`exits`).
class Proc {
  constructor(name, command, args, { env, restart = true } = {}) {
    Object.assign(this, { name, command, args, env, restart })
    this.output = ''
    this.exits = 0
    this.starts = 0
    this.expectExit = false
    this.stopping = false
    this.log = path.join(logDir, `${name}.log`)
    procs.push(this)
    this.start()
  }

  start() {
    this.starts += 1
    this.expectExit = false
    this.startOffset = this.output.length
    this.child = spawn(this.command, this.args, { cwd: ROOT, env: this.env, stdio: ['ignore', 'pipe', 'pipe'] })
    const keep = (chunk) => {
      this.output += chunk
      fs.appendFileSync(this.log, chunk)
    }
    this.child.stdout.on('data', keep)
    this.child.stderr.on('data', keep)
    this.exited = new Promise((resolve) => this.child.once('exit', resolve))
    this.child.once('exit', (code, signal) => {
      fs.appendFileSync(this.log, `\n[faults] ${this.name} exited (${code ?? signal})\n`)
      if (this.stopping) return
      if (!this.expectExit) {
        this.exits += 1
        step(`${this.name} exited by itself (${code ?? signal}); restarting it`)
      }
      if (this.restart) setTimeout(() => this.stopping || this.start(), 300)
    })
  }

  get alive() {
    return this.child.exitCode === null && this.child.signalCode === null
  }

  mark() {
    return this.output.length
  }

  waitOutput(pattern, { from = 0, timeout = 30000 } = {}) {
    return waitFor(() => pattern.test(this.output.slice(from)), {
      timeout,
      what: `${this.name}: ${pattern}\n${this.output.slice(-2000)}`,
    })
  }

  async kill(signal = 'SIGKILL') {
    this.expectExit = true
    if (this.alive) this.child.kill(signal)
    await this.exited
  }

  signal(signal) {
    if (this.alive) this.child.kill(signal)
  }

  async stop() {
    this.stopping = true
    this.expectExit = true
    if (this.alive) this.child.kill('SIGTERM')
    await Promise.race([this.exited, sleep(5000)])
    if (this.alive) this.child.kill('SIGKILL')
  }
}

// Last resort when the suite itself dies: no child outlives it.
function killAll() {
  for (const proc of procs) {
    proc.stopping = true
    try {
      if (proc.alive) proc.child.kill('SIGKILL')
    } catch {
      // already gone
    }
  }
}
process.on('exit', killAll)
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    console.error(`[faults] ${signal}: stopping every process`)
    killAll() // scripts/test-faults.sh drops the database
    process.exit(130)
  })
}

// The long-running probe (e2e/fault_probe.py): one JSON line per question and answer.
function startProbe(env) {
  const child = spawn(PYTHON, [path.join(__dirname, 'fault_probe.py')], { cwd: ROOT, env, stdio: ['pipe', 'pipe', 'inherit'] })
  procs.push({ name: 'probe', child, get alive() { return child.exitCode === null }, stop: async () => child.kill('SIGKILL') })
  const waiting = []
  readline.createInterface({ input: child.stdout }).on('line', (line) => waiting.shift()(JSON.parse(line)))
  let chain = Promise.resolve()
  const ask = (...command) => {
    const answer = chain.then(() => new Promise((resolve, reject) => {
      waiting.push((reply) => ('error' in reply ? reject(new Error(`probe ${command[0]}: ${reply.error}`)) : resolve(reply.ok)))
      child.stdin.write(`${JSON.stringify(command)}\n`)
    }))
    chain = answer.catch(() => {})
    return answer
  }
  return {
    maxSeq: () => ask('max-seq'),
    events: (topic, after, until) => ask('events', topic, after, until),
    attendance: (org, group, student) => ask('attendance', org, group, student),
    unprocessed: () => ask('unprocessed'),
    terminateBackends: () => ask('terminate-backends'),
  }
}

// One realtime-js client on one topic. Its transport is `ws` with two hooks the suite drives: it
// can be cut (no close frame, as a network drop) and it can cut itself right after sending a join
// (a close mid-join). Replay resumes after the last event seen.
function makeClient(endpoint, user, label, topic) {
  const token = h.token(user)
  const state = {
    label, topic, frames: [], seen: new Map(), maxSeq: 0, joins: 0, refused: [], systems: [],
    reconnectDelay: 100, cutAfterJoin: false, conn: null, joinLog: [],
  }
  class Transport extends WebSocket {
    constructor(...args) {
      super(...args)
      state.conn = this
    }

    send(data, ...rest) {
      super.send(data, ...rest)
      if (typeof data === 'string' && data.includes('"phx_join"')) state.joinLog.push({ at: Date.now(), afterId: replay.after_id })
      if (state.cutAfterJoin && typeof data === 'string' && data.includes('"phx_join"')) {
        state.cutAfterJoin = false
        setTimeout(() => this.terminate(), Math.floor(Math.random() * 20))
      }
    }
  }
  const client = new RealtimeClient(endpoint, {
    transport: Transport,
    params: { apikey: token },
    timeout: 5000,
    heartbeatIntervalMs: 5000,
    reconnectAfterMs: () => state.reconnectDelay,
  })
  client.setAuth(token)
  const replay = { after_id: 0, limit: 1000 }
  state.replay = replay
  state.client = client
  state.channel = client
    .channel(topic, { config: { private: true, broadcast: { self: false, ack: true, replay } } })
    .on('broadcast', { event: 'attendance_sync' }, ({ meta }) => {
      if (!meta || typeof meta.id !== 'number') return
      state.frames.push(meta.id)
      state.seen.set(meta.id, (state.seen.get(meta.id) || 0) + 1)
      if (meta.id > state.maxSeq) state.maxSeq = meta.id
      if (meta.id > replay.after_id) replay.after_id = meta.id
    })
    .on('system', {}, (payload) => state.systems.push(payload))
  state.channel.joinPush.receive('ok', () => (state.joins += 1))
  state.channel.joinPush.receive('error', (response) => state.refused.push({ at: Date.now(), reason: response && response.reason }))
  // Cut the connection as a network would (no close frame); it reconnects after `delay` ms.
  state.cut = (delay = 100) => {
    state.reconnectDelay = delay
    if (state.conn && state.conn.readyState === WebSocket.OPEN) state.conn.terminate()
  }
  state.closeNow = (delay = 100) => {
    state.reconnectDelay = delay
    if (state.conn && state.conn.readyState === WebSocket.OPEN) state.conn.close(1000)
  }
  clients.push(state)
  return state
}

const maxSeen = () => Math.max(0, ...clients.map((c) => c.maxSeq))

// The end of a fault: when it was, and the newest event any socket had then.
const faultEnd = () => ({ at: Date.now(), mark: maxSeen() })

// Recovery: from the end of the fault until every socket has an event newer than the newest any
// socket had then. Null when that does not happen within RECOVERY_BOUND_MS.
async function recovery({ at: since, mark }) {
  try {
    await waitFor(() => clients.every((c) => c.maxSeq > mark), { timeout: RECOVERY_BOUND_MS, interval: 10, what: 'recovery' })
    return Date.now() - since
  } catch {
    return null
  }
}

const totalJoins = () => clients.reduce((n, c) => n + c.joins, 0)
const refusedSince = (t) => clients.flatMap((c) => c.refused.filter((r) => r.at >= t).map((r) => `${c.label}: ${r.reason}`))
const allRejoinedSince = (joins) => clients.every((c, i) => c.joins > joins[i])

// Every stored event of a socket's topic in (from, to] must reach the socket once, in seq order.
async function account(from, to) {
  const truth = {}
  for (const topic of new Set(clients.map((c) => c.topic))) truth[topic] = await probe.events(topic, from, to)
  const complete = () => clients.every((c) => truth[c.topic].every((seq) => c.seen.has(seq)))
  await waitFor(complete, { timeout: 10000, interval: 50, what: 'every event at every socket' }).catch(() => {})
  await sleep(300) // a late duplicate shows up here
  const result = { written: Object.values(truth).reduce((n, seqs) => n + seqs.length, 0), expected: 0, received: 0, lost: 0, duplicated: 0, outOfOrder: 0, socketsHit: 0, losses: [] }
  for (const c of clients) {
    const seqs = truth[c.topic]
    result.expected += seqs.length
    let top = 0
    const counted = new Map()
    let hit = false
    for (const seq of c.frames) {
      if (seq <= from || seq > to) continue
      result.received += 1
      const n = (counted.get(seq) || 0) + 1
      counted.set(seq, n)
      if (n > 1) {
        result.duplicated += 1
        hit = true
      } else if (seq < top) {
        result.outOfOrder += 1
        hit = true
      }
      if (seq > top) top = seq
    }
    const lost = seqs.filter((seq) => !counted.has(seq))
    if (lost.length) {
      result.lost += lost.length
      hit = true
      const joins = c.joinLog.filter((j) => j.afterId >= from).map((j) => `${j.afterId}@${new Date(j.at).toISOString().slice(11, 23)}`)
      result.losses.push(`${c.label}: lost ${lost.slice(0, 8).join(',')}${lost.length > 8 ? ` (+${lost.length - 8})` : ''}; joins after_id@time ${joins.join(' ') || '-'}`)
    }
    if (hit) result.socketsHit += 1
  }
  return result
}

// One fault: the window of seqs written while it ran, its accounting and its targets.
async function fault(name, run) {
  if (ONLY && !ONLY.test(name)) return
  step(`fault: ${name}`)
  const from = await probe.maxSeq()
  const exitsBefore = procs.filter((p) => p instanceof Proc).reduce((n, p) => n + p.exits, 0)
  const t0 = Date.now()
  const ctx = { notes: [], misses: [], recovery: undefined }
  await run(ctx)
  await sleep(2000) // the stream runs on after recovery
  const to = await probe.maxSeq()
  const result = await account(from, to)
  const exits = procs.filter((p) => p instanceof Proc).reduce((n, p) => n + p.exits, 0) - exitsBefore
  const refused = refusedSince(t0)
  const systemMessages = clients.flatMap((c) => c.systems.filter((s) => s && s.status !== 'ok'))
  const systems = systemMessages.length
  if (result.lost) ctx.misses.push('lost')
  for (const line of result.losses) step(`  ${line}`) // which frames, and the rejoins that missed them
  if (result.duplicated) ctx.misses.push('duplicated')
  if (result.outOfOrder) ctx.misses.push('out of order')
  if (exits) ctx.misses.push(`${exits} process exit(s) by themselves`)
  if (refused.length) ctx.misses.push(`${refused.length} join(s) refused (${refused[0]})`)
  if (ctx.recovery === null) ctx.misses.push(`no recovery within ${RECOVERY_BOUND_MS / 1000} s`)
  if (result.socketsHit) ctx.notes.push(`${result.socketsHit}/${clients.length} sockets hit`)
  if (systems) ctx.notes.push(`${systems} system messages, e.g. ${JSON.stringify(systemMessages[0]).slice(0, 160)}`)
  // Every client must be joined again (a rejoin after an error may take realtime-js' backoff).
  const joined = await waitFor(() => clients.every((c) => c.channel.state === 'joined'), { timeout: 10000, what: 'joined' }).then(() => true, () => false)
  if (!joined) ctx.misses.push(`${clients.filter((c) => c.channel.state !== 'joined').length} client(s) not joined 10 s after the fault`)
  const stuck = ctx.recovery === null || exits > 0 || !joined
  if (stuck) ctx.notes.push('then the stack was reset')
  const row = { name, ...result, recovery: ctx.recovery, seconds: (Date.now() - t0) / 1000, notes: ctx.notes, misses: ctx.misses }
  rows.push(row)
  if (ctx.misses.length) exitCode = 1
  step(`${name}: written ${row.written}, expected ${row.expected}, received ${row.received}, lost ${row.lost}, duplicated ${row.duplicated}, out of order ${row.outOfOrder}, recovery ${row.recovery == null ? '-' : `${row.recovery} ms`}${ctx.notes.length ? `; ${ctx.notes.join('; ')}` : ''}${ctx.misses.length ? `  MISSED: ${ctx.misses.join('; ')}` : ''}`)
  for (const c of clients) c.systems.length = 0
  if (stuck) await reset()
}

// After a fault the product did not recover from, an operator's full restart, so that the next
// fault starts from a working system: Redis emptied, both listeners and the web process restarted,
// every client joined again. Events written meanwhile belong to no fault's window.
async function reset() {
  step('reset: Redis emptied, listeners and web restarted')
  execFileSync('redis-cli', ['-h', '127.0.0.1', '-p', String(stack.redisPort), 'FLUSHALL'])
  for (const proc of [...stack.listeners, stack.web]) {
    const from = proc.mark()
    proc.restart = false
    await proc.kill('SIGTERM')
    proc.restart = true
    proc.start()
    await proc.waitOutput(/listener active|waiting as standby|Uvicorn running on/, { from, timeout: 30000 }).catch(() => {})
  }
  await waitFor(() => clients.every((c) => c.channel.state === 'joined'), { timeout: 30000, what: 'every client joined' }).catch(() => step('reset: not every client joined again'))
  await sleep(2000)
}

function table() {
  const head = ['fault', 'written', 'expected', 'received', 'lost', 'dup', 'order', 'recovery', 'result']
  const body = rows.map((r) => [
    r.name, r.written, r.expected, r.received, r.lost, r.duplicated, r.outOfOrder,
    r.recovery == null ? '-' : `${(r.recovery / 1000).toFixed(2)} s`,
    (r.misses.length ? `MISSED: ${r.misses.join('; ')}` : 'ok') + (r.notes.length ? ` (${r.notes.join('; ')})` : ''),
  ])
  const sum = (k) => rows.reduce((n, r) => n + r[k], 0)
  body.push(['total', sum('written'), sum('expected'), sum('received'), sum('lost'), sum('duplicated'), sum('outOfOrder'), '', ''])
  const lines = [head, ...body].map((cells) => `| ${cells.map(String).join(' | ')} |`)
  lines.splice(1, 0, `|${head.map(() => '---').join('|')}|`)
  return lines.join('\n')
}

async function main() {
  const webPort = Number(process.env.FAULTS_WEB_PORT || (await freePort()))
  const redisPort = Number(process.env.FAULTS_REDIS_PORT || (await freePort()))
  const redisURL = `redis://127.0.0.1:${redisPort}/0`
  const dbName = `${process.env.DB_NAME || 'harry_realtime'}_faults`.replace(/[^A-Za-z0-9_]/g, '_')
  step(`logs in ${logDir}; web :${webPort}, redis :${redisPort}, database ${dbName}, ${RATE} changes/s`)

  // Its own Redis, without persistence: a restart starts empty, as a crashed cache does.
  const redisArgs = ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', logDir]
  const redis = new Proc('redis', process.env.FAULTS_REDIS_SERVER || 'redis-server', redisArgs, { env: process.env, restart: false })
  Object.assign(stack, { redis, redisPort })
  await redis.waitOutput(/Ready to accept connections/)

  h = await createHarness({ dbName, env: { REDIS_URL: redisURL } })
  step('database created and seeded')
  probe = startProbe(h.env())

  const listenerEnv = h.env({ LOG_LEVEL: 'INFO' })
  const listeners = [new Proc('listener-1', PYTHON, ['manage.py', 'realtime_listen'], { env: listenerEnv })]
  await listeners[0].waitOutput(/listener active/)
  listeners.push(new Proc('listener-2', PYTHON, ['manage.py', 'realtime_listen'], { env: listenerEnv }))
  await listeners[1].waitOutput(/waiting as standby/)
  // The web process as the Procfile serves it.
  const webArgs = ['-m', 'uvicorn', '--host', '127.0.0.1', '--port', String(webPort), '--ws', 'websockets-sansio',
    '--no-access-log', '--lifespan', 'off', 'harry_realtime.asgi:application']
  const web = new Proc('web', PYTHON, webArgs, { env: h.env() })
  await web.waitOutput(/Uvicorn running on/)
  Object.assign(stack, { listeners, web })
  step('two listeners (one active) and the web process up')

  // 24 sockets: four for each of three users per school, on their school's attendance topic.
  const endpoint = `ws://127.0.0.1:${webPort}/realtime/v1`
  const writes = []
  for (const key of ['a', 'b']) {
    const school = h.schools[key]
    const topic = topics(school).attendance
    for (const label of ['teacher', 'co_teacher', 'admin']) {
      for (let i = 1; i <= SOCKETS_PER_USER; i++) makeClient(endpoint, h.users[key][label], `${key}-${label}-${i}`, topic)
    }
    const row = await probe.attendance(school.org, school.group, school.student)
    // Two changes of the row per transaction (consecutive seqs, committed together).
    writes.push(`${school.org}:${h.users[key].teacher.id}:${row}:${row}`)
  }
  for (const c of clients) c.replay.after_id = await probe.maxSeq()
  for (const c of clients) c.channel.subscribe()
  await waitFor(() => clients.every((c) => c.joins > 0), { timeout: 30000, what: 'every socket joined' })
  step(`${clients.length} sockets joined`)

  const writer = new Proc('writer', PYTHON, [path.join(__dirname, 'fault_writer.py'), String(RATE), ...writes], { env: h.env() })
  await writer.waitOutput(/written [1-9]/)

  // Active: alive, and its last word since it started was that it leads.
  const isActive = (l) => {
    const out = l.output.slice(l.startOffset)
    return l.alive && out.lastIndexOf('listener active') > Math.max(out.lastIndexOf('waiting as standby'), out.lastIndexOf('connection lost'))
  }
  const active = () => listeners.find(isActive)
  // The standby's take-over time after the active listener is killed.
  async function killActive({ restart = true } = {}) {
    const victim = active()
    if (!victim) throw new Error('no active listener')
    const other = listeners.find((l) => l !== victim)
    const from = other.mark()
    const end = faultEnd()
    const at = end.at
    victim.restart = restart
    const victimFrom = victim.mark()
    await victim.kill()
    let takeover = null
    try {
      await other.waitOutput(/listener active/, { from, timeout: 15000 })
      takeover = Date.now() - at
    } catch {
      // reported as a miss
    }
    if (restart) await victim.waitOutput(/waiting as standby|listener active/, { from: victimFrom, timeout: 30000 }).catch(() => {})
    victim.restart = true
    return { end, takeover }
  }

  await fault('steady (no fault)', async (ctx) => {
    await sleep(5000)
    ctx.recovery = undefined
  })

  await fault('listener SIGKILL x5', async (ctx) => {
    const takeovers = []
    let last
    for (let i = 0; i < 5; i++) {
      await sleep(500 + Math.floor(Math.random() * 1500))
      const { end, takeover } = await killActive()
      takeovers.push(takeover)
      last = end
    }
    ctx.recovery = await recovery(last)
    ctx.notes.push(`take-over ${takeovers.map((t) => (t == null ? 'never' : `${t} ms`)).join(', ')}`)
    if (takeovers.some((t) => t == null)) ctx.misses.push('a standby did not take over')
  })

  await fault('active-listener failover', async (ctx) => {
    await sleep(2000)
    const { end, takeover } = await killActive({ restart: false })
    ctx.recovery = await recovery(end)
    ctx.notes.push(`take-over ${takeover == null ? 'never' : `${takeover} ms`}`)
    if (takeover == null || takeover >= FAILOVER_TARGET_MS) ctx.misses.push(`failover ${takeover} ms (target < ${FAILOVER_TARGET_MS} ms)`)
    await sleep(2000)
    const down = listeners.find((l) => !l.alive)
    if (down) {
      const from = down.mark()
      down.start()
      await down.waitOutput(/waiting as standby|listener active/, { from, timeout: 30000 }).catch(() => {})
    }
  })

  await fault('Redis SIGKILL, restart after 3 s', async (ctx) => {
    await sleep(2000)
    await redis.kill()
    await sleep(3000)
    const from = redis.mark()
    redis.start()
    await redis.waitOutput(/Ready to accept connections/, { from }).catch(() => {})
    ctx.recovery = await recovery(faultEnd())
  })

  await fault('Redis paused (SIGSTOP) 10 s', async (ctx) => {
    await sleep(2000)
    redis.signal('SIGSTOP')
    await sleep(10000)
    redis.signal('SIGCONT')
    ctx.recovery = await recovery(faultEnd())
  })

  await fault('PostgreSQL backends terminated x2', async (ctx) => {
    await sleep(2000)
    const killed = [await probe.terminateBackends()]
    await sleep(2000)
    const end = faultEnd()
    killed.push(await probe.terminateBackends())
    ctx.recovery = await recovery(end)
    ctx.notes.push(`backends terminated ${killed.join(' + ')}`)
  })

  await fault('web SIGKILL + restart, all reconnect', async (ctx) => {
    await sleep(2000)
    const joins = clients.map((c) => c.joins)
    const from = web.mark()
    web.restart = false
    await web.kill()
    web.restart = true
    web.start()
    await web.waitOutput(/Uvicorn running on/, { from, timeout: 30000 })
    const end = faultEnd()
    const up = end.at
    const rejoined = await waitFor(() => allRejoinedSince(joins), { timeout: 30000, interval: 10, what: 'every channel rejoined' }).then(() => Date.now() - up).catch(() => null)
    ctx.recovery = await recovery(end)
    ctx.notes.push(`all ${clients.length} rejoined ${rejoined == null ? 'not within 30 s' : `${rejoined} ms`} after the restart`)
    if (rejoined == null || rejoined > RECONNECT_TARGET_MS) ctx.misses.push(`reconnect after restart ${rejoined == null ? 'never' : `${rejoined} ms`} (target: at once)`)
  })

  await fault('clients drop 10 s, rejoin with replay', async (ctx) => {
    await sleep(1000)
    const joins = clients.map((c) => c.joins)
    for (const c of clients) c.cut(10000)
    await sleep(10000)
    const end = faultEnd()
    await waitFor(() => allRejoinedSince(joins), { timeout: 30000, interval: 10, what: 'rejoin' }).catch(() => {})
    for (const c of clients) c.reconnectDelay = 100
    ctx.recovery = await recovery(end)
  })

  await fault('clients close mid-send x3, reconnect at once', async (ctx) => {
    for (let round = 0; round < 3; round++) {
      await sleep(1500)
      const joins = clients.map((c) => c.joins)
      // Half cut the TCP connection, half send a close frame; both while frames are streaming.
      clients.forEach((c, i) => setTimeout(() => (i % 2 ? c.cut(0) : c.closeNow(0)), Math.floor(Math.random() * 300)))
      await waitFor(() => allRejoinedSince(joins), { timeout: 30000, interval: 10, what: 'rejoin' }).catch(() => ctx.misses.push(`round ${round + 1}: not every channel rejoined in 30 s`))
    }
    for (const c of clients) c.reconnectDelay = 100
    ctx.recovery = await recovery(faultEnd())
  })

  await fault('clients close mid-join x2, reconnect at once', async (ctx) => {
    for (let round = 0; round < 2; round++) {
      await sleep(1500)
      const joins = clients.map((c) => c.joins)
      for (const c of clients) {
        c.cutAfterJoin = true
        c.cut(0)
      }
      await waitFor(() => allRejoinedSince(joins), { timeout: 30000, interval: 10, what: 'rejoin' }).catch(() => ctx.misses.push(`round ${round + 1}: not every channel rejoined in 30 s`))
    }
    for (const c of clients) c.reconnectDelay = 100
    ctx.recovery = await recovery(faultEnd())
  })

  // The faults took less time than the minimum of changes needs at this rate (a fast recovery):
  // the stream runs on, accounted like every window, until the suite has captured that many.
  const captured = rows.reduce((n, r) => n + r.written, 0)
  if (captured < MIN_EVENTS && !ONLY) {
    await fault(`steady until ${MIN_EVENTS} changes`, async (ctx) => {
      await sleep(Math.ceil(((MIN_EVENTS - captured) / RATE) * 1000) + 1000)
      ctx.recovery = undefined
    })
  }

  await writer.stop()
  const total = rows.reduce((n, r) => n + r.written, 0)
  console.log(`\nfault suite: ${clients.length} sockets, ${total} changes written at ${RATE}/s, ${((Date.now() - started) / 1000).toFixed(0)} s\n`)
  console.log(table())
  if (clients.length < MIN_SOCKETS) {
    console.log(`MISSED: ${clients.length} sockets (at least ${MIN_SOCKETS})`)
    exitCode = 1
  }
  if (total < MIN_EVENTS && !ONLY) {
    console.log(`MISSED: ${total} changes (at least ${MIN_EVENTS})`)
    exitCode = 1
  }
}

main()
  .catch((error) => {
    console.error(error)
    if (rows.length) console.log(table())
    exitCode = 1
  })
  .finally(async () => {
    for (const c of clients) {
      try {
        c.client.disconnect()
      } catch {
        // its server may be gone
      }
    }
    for (const proc of procs.slice().reverse()) await proc.stop()
    try {
      if (h) await h.close()
    } catch (error) {
      console.error(`dropping the database: ${error.message}`)
    }
    if (exitCode === 0 && !process.env.FAULTS_LOGS) fs.rmSync(logDir, { recursive: true, force: true })
    else console.error(`process logs kept in ${logDir}`)
    console.log(exitCode === 0 ? '\nfault suite: every target met' : '\nfault suite: targets missed (see MISSED above)')
    process.exit(exitCode)
  })
