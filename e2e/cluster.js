// Scale-out on real components (`make test-cluster`): two web processes (uvicorn) behind HAProxy,
// reaching PostgreSQL through PgBouncer in transaction pooling mode; two listeners (one active, one
// standby) connected to PostgreSQL directly (LISTEN and a session advisory lock); a Celery worker;
// Redis as a primary and a replica watched by three Sentinels, which every process finds the
// primary through. Unmodified realtime-js clients connect through the proxy only.
//
// Then, with a writer marking attendance through the proxy all along: kill a web process, kill the
// active listener, kill the Redis primary. After each, every client must hold every stored event
// of its topic exactly once (lost and duplicated counts printed per step). Each process is
// restarted when it exits, as the compose restart policy does; the restarts are printed too.
// Clients keep `replay.after_id` at the last event they saw, so a rejoin asks for exactly the rest.
'use strict'

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const WebSocket = require('ws')
const { RealtimeClient } = require('@supabase/realtime-js')
const { createHarness, subscribe, waitFor, topics, PYTHON, ROOT } = require('./harness')

const MASTER = 'harrycluster'
const WRITE_INTERVAL_MS = 100
// The standby polls the leader lock every second (events/listener.py standby_interval).
const LISTENER_TAKEOVER_BOUND_MS = 5000
// Sentinel: primary down after 1 s, then an election and the promotion of the replica.
const REDIS_FAILOVER_BOUND_MS = 15000

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'harry-cluster-'))
fs.chmodSync(dir, 0o777) // PgBouncer drops root privileges and writes its log and pid here
const procs = []
let h
let ports
let web
let listeners
let proxyEndpoint
let proxyHTTP
const report = []
const clients = []

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

// A child process kept running like a compose service with `restart: unless-stopped`.
class Proc {
  constructor(name, command, args, { env = process.env, restart = false, cwd = ROOT } = {}) {
    Object.assign(this, { name, command, args, env, restart, cwd })
    this.output = ''
    this.restarts = 0
    this.stopping = false
    procs.push(this)
    this.start()
  }

  start() {
    this.child = spawn(this.command, this.args, { cwd: this.cwd, env: this.env, stdio: ['ignore', 'pipe', 'pipe'] })
    const keep = (chunk) => {
      this.output += chunk
      if (process.env.CLUSTER_LOGS) fs.appendFileSync(process.env.CLUSTER_LOGS, `[${this.name}] ${chunk}`)
    }
    this.child.stdout.on('data', keep)
    this.child.stderr.on('data', keep)
    this.exited = new Promise((resolve) => this.child.once('exit', resolve))
    this.child.once('exit', () => {
      if (this.stopping || !this.restart) return
      this.restarts += 1
      setTimeout(() => this.stopping || this.start(), 300)
    })
  }

  // Resolves when `pattern` appears in the output written after `from` (an earlier output length).
  waitOutput(pattern, { from = 0, timeout = 30000 } = {}) {
    return waitFor(() => pattern.test(this.output.slice(from)), {
      timeout,
      what: `${this.name}: ${pattern}\n${this.output.slice(-3000)}`,
    })
  }

  async kill() {
    this.child.kill('SIGKILL')
    await this.exited
  }

  async stop() {
    this.stopping = true
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM')
    await Promise.race([this.exited, sleep(5000)])
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL')
  }
}

function redisCli(port, ...args) {
  return execFileSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { encoding: 'utf8' }).trim()
}

function primaryPort() {
  for (const port of ports.sentinels) {
    try {
      const [, p] = redisCli(port, 'SENTINEL', 'get-master-addr-by-name', MASTER).split('\n')
      return Number(p)
    } catch {
      // that sentinel is not answering; ask the next
    }
  }
  return null
}

// The probe runs with the cluster's Redis (through the sentinels), as the app processes do.
function probe(...args) {
  return JSON.parse(execFileSync(PYTHON, [path.join(__dirname, 'cluster_probe.py'), ...args], {
    cwd: ROOT,
    env: h.env(redisEnv()),
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  }))
}

function haproxySessions() {
  // `show stat` on the admin socket: current sessions (scur) per web server.
  return new Promise((resolve, reject) => {
    const socket = net.connect(path.join(dir, 'haproxy.sock'))
    let text = ''
    socket.on('data', (chunk) => (text += chunk))
    socket.on('end', () => {
      const [header, ...rows] = text.trim().split('\n')
      const columns = header.replace(/^# /, '').split(',')
      const sessions = {}
      for (const row of rows.map((line) => line.split(','))) {
        if (row[0] === 'web' && row[1].startsWith('web')) sessions[row[1]] = Number(row[columns.indexOf('scur')])
      }
      resolve(sessions)
    })
    socket.on('error', reject)
    socket.end('show stat\n')
  })
}

async function startWeb(name, port) {
  const proc = new Proc(
    name,
    PYTHON,
    ['-m', 'uvicorn', '--host', '127.0.0.1', '--port', String(port), '--ws', 'websockets-sansio', '--lifespan', 'off',
      '--proxy-headers', '--forwarded-allow-ips', '127.0.0.1', '--log-level', 'info', 'harry_realtime.asgi:application'],
    { env: h.env(webEnv()), restart: true },
  )
  await proc.waitOutput(/Uvicorn running on/)
  return proc
}

function redisEnv() {
  return {
    REDIS_URL: 'redis://127.0.0.1:1/0', // the database number; the host comes from the sentinels
    REDIS_SENTINELS: ports.sentinels.map((p) => `127.0.0.1:${p}`).join(','),
    REDIS_SENTINEL_MASTER: MASTER,
  }
}

function webEnv() {
  // The web processes and the worker reach PostgreSQL through PgBouncer.
  const direct = new URL(h.env().DATABASE_URL)
  const pooled = new URL(direct)
  pooled.port = String(ports.pgbouncer)
  return { ...redisEnv(), DATABASE_URL: pooled.toString(), DB_PGBOUNCER: '1', LOG_LEVEL: 'WARNING' }
}

const started = Date.now()
const step = (what) => console.error(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${what}`)

before(async () => {
  ports = {
    primary: await freePort(),
    replica: await freePort(),
    sentinels: [await freePort(), await freePort(), await freePort()],
    pgbouncer: await freePort(),
    proxy: await freePort(),
    web: [await freePort(), await freePort()],
  }
  h = await createHarness()
  step('database created')

  // Redis: a primary, a replica, three sentinels (quorum 2).
  const redisArgs = (port) => ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir]
  new Proc('redis-primary', 'redis-server', redisArgs(ports.primary))
  new Proc('redis-replica', 'redis-server', [...redisArgs(ports.replica), '--replicaof', '127.0.0.1', String(ports.primary)])
  await waitFor(() => {
    try {
      return redisCli(ports.replica, 'INFO', 'replication').includes('master_link_status:up')
    } catch {
      return false
    }
  }, { timeout: 15000, what: 'the replica to sync' })
  for (const port of ports.sentinels) {
    const conf = path.join(dir, `sentinel-${port}.conf`)
    fs.writeFileSync(conf, [
      `port ${port}`, 'bind 127.0.0.1', `dir ${dir}`,
      `sentinel monitor ${MASTER} 127.0.0.1 ${ports.primary} 2`,
      `sentinel down-after-milliseconds ${MASTER} 1000`,
      `sentinel failover-timeout ${MASTER} 10000`,
      `sentinel parallel-syncs ${MASTER} 1`, '',
    ].join('\n'))
    new Proc(`sentinel-${port}`, 'redis-server', [conf, '--sentinel'])
  }
  const sentinelReady = (port) => {
    const fields = redisCli(port, 'SENTINEL', 'master', MASTER).split('\n')
    const value = (name) => fields[fields.indexOf(name) + 1]
    return value('num-slaves') === '1' && value('num-other-sentinels') === String(ports.sentinels.length - 1)
  }
  await waitFor(() => {
    try {
      return ports.sentinels.every(sentinelReady)
    } catch {
      return false
    }
  }, { timeout: 20000, what: 'the sentinels to find the replica and each other' })
  step('redis primary, replica and sentinels up')

  // PgBouncer, transaction pooling, a small server pool so that requests share server connections.
  const direct = new URL(h.env().DATABASE_URL)
  const database = direct.pathname.slice(1)
  fs.writeFileSync(path.join(dir, 'userlist.txt'), `"${direct.username}" "${decodeURIComponent(direct.password)}"\n`)
  fs.writeFileSync(path.join(dir, 'pgbouncer.ini'), [
    '[databases]',
    `${database} = host=${direct.hostname} port=${direct.port || 5432} dbname=${database}`,
    '[pgbouncer]',
    'listen_addr = 127.0.0.1', `listen_port = ${ports.pgbouncer}`, 'unix_socket_dir =',
    'auth_type = md5', `auth_file = ${dir}/userlist.txt`,
    'pool_mode = transaction', 'default_pool_size = 4', 'max_client_conn = 500',
    'ignore_startup_parameters = extra_float_digits,options',
    `logfile = ${dir}/pgbouncer.log`, `pidfile = ${dir}/pgbouncer.pid`, '',
  ].join('\n'))
  for (const file of ['userlist.txt', 'pgbouncer.ini']) fs.chmodSync(path.join(dir, file), 0o644)
  const asUser = process.getuid && process.getuid() === 0 ? ['-u', 'nobody'] : []
  const bouncer = new Proc('pgbouncer', 'pgbouncer', [...asUser, path.join(dir, 'pgbouncer.ini')])
  await waitFor(() => fs.existsSync(path.join(dir, 'pgbouncer.pid')) || bouncer.child.exitCode !== null, { what: 'pgbouncer' })
  assert.equal(bouncer.child.exitCode, null, bouncer.output)
  step('pgbouncer up')

  // Two listeners straight to PostgreSQL; the first leads, the second waits.
  listeners = [
    new Proc('listener-1', PYTHON, ['manage.py', 'realtime_listen', '--poll-interval', '1'], { env: h.env({ ...redisEnv(), LOG_LEVEL: 'INFO' }), restart: true }),
  ]
  await listeners[0].waitOutput(/listener active/)
  listeners.push(new Proc('listener-2', PYTHON, ['manage.py', 'realtime_listen', '--poll-interval', '1'], { env: h.env({ ...redisEnv(), LOG_LEVEL: 'INFO' }), restart: true }))
  await listeners[1].waitOutput(/waiting as standby/)
  h.python('outbox_drained.py', ['30'])
  step('listeners: one active, one standby')

  new Proc('worker', PYTHON, ['-m', 'celery', '-A', 'harry_realtime', 'worker', '--loglevel', 'INFO', '--concurrency', '1', '-n', 'cluster@%h'], { env: h.env(webEnv()), restart: true })
  web = [await startWeb('web-1', ports.web[0]), await startWeb('web-2', ports.web[1])]
  step('worker and web processes up')

  // HAProxy: round robin, not sticky (any process serves any client), health-checked on /healthz.
  fs.writeFileSync(path.join(dir, 'haproxy.cfg'), [
    'global', `    stats socket ${dir}/haproxy.sock mode 600 level admin`,
    'defaults', '    mode http', '    option forwardfor', '    timeout connect 2s', '    timeout client 75s', '    timeout server 75s',
    '    timeout tunnel 1h', '    retries 3', '    option redispatch',
    'frontend http', `    bind 127.0.0.1:${ports.proxy}`, '    default_backend web',
    'backend web', '    balance roundrobin', '    option httpchk',
    '    http-check send meth GET uri /healthz hdr Host 127.0.0.1',
    '    default-server check inter 500ms fall 2 rise 2',
    `    server web1 127.0.0.1:${ports.web[0]}`, `    server web2 127.0.0.1:${ports.web[1]}`, '',
  ].join('\n'))
  new Proc('haproxy', 'haproxy', ['-db', '-f', path.join(dir, 'haproxy.cfg')])
  proxyHTTP = `http://127.0.0.1:${ports.proxy}`
  proxyEndpoint = `ws://127.0.0.1:${ports.proxy}/realtime/v1`
  for (let i = 0; i < 100; i++) {
    const sessions = await haproxySessions().catch(() => ({}))
    const health = await fetch(`${proxyHTTP}/healthz`).then((r) => r.status).catch(() => 0)
    if (health === 200 && Object.keys(sessions).length === 2) break
    await sleep(100)
  }
  step('haproxy up')
})

after(async () => {
  for (const client of clients) await client.disconnect()
  for (const proc of procs.slice().reverse()) await proc.stop()
  if (h) await h.close()
  fs.rmSync(dir, { recursive: true, force: true })
  console.log(`\nscale-out results\n${report.map((line) => `  ${line}`).join('\n')}`)
})

// A realtime-js client through the proxy; it follows every event and keeps replay.after_id current.
function clusterClient(user, label, topic, afterId) {
  const token = h.token(user)
  const client = new RealtimeClient(proxyEndpoint, {
    transport: WebSocket,
    params: { apikey: token },
    timeout: 5000,
    heartbeatIntervalMs: 5000,
    reconnectAfterMs: () => 300,
  })
  client.setAuth(token)
  clients.push(client)
  const state = { label, client, seen: new Map(), changes: 0, broadcasts: [], joins: 0 }
  const replay = { after_id: afterId, limit: 1000 }
  state.channel = client
    .channel(topic, { config: { private: true, presence: { key: label }, broadcast: { self: false, ack: true, replay } } })
    .on('broadcast', { event: 'attendance_sync' }, ({ meta }) => {
      state.seen.set(meta.id, (state.seen.get(meta.id) || 0) + 1)
      if (meta.id > replay.after_id) replay.after_id = meta.id
    })
    .on('postgres_changes', { event: '*', schema: 'public', table: 'attendance', filter: `group_id=eq.${h.schools.a.group}` }, () => {
      state.changes += 1
    })
    .on('broadcast', { event: 'cluster_ping' }, ({ payload }) => state.broadcasts.push(payload.from))
    .on('presence', { event: 'sync' }, () => {})
  return state
}

// Marks the group's student through the proxy every WRITE_INTERVAL_MS until stopped; a failed
// request (its web process just died, Redis failing over) is retried, as an app would.
function startWriter() {
  const school = h.schools.a
  const writer = { running: true, writes: 0, failures: 0 }
  writer.done = (async () => {
    while (writer.running) {
      const response = await fetch(`${proxyHTTP}/api/realtime/attendance/mark`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${h.token(h.users.a.teacher)}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ groupId: school.group, studentId: school.student, status: 'present', notes: `w${writer.writes}` }),
      }).catch(() => null)
      if (response && response.status === 200) writer.writes += 1
      else writer.failures += 1
      await sleep(WRITE_INTERVAL_MS)
    }
  })()
  writer.stop = async () => {
    writer.running = false
    await writer.done
  }
  return writer
}

// Every stored event of the topic after `afterSeq` must reach every client exactly once.
async function account(states, topic, afterSeq) {
  const truth = probe('events', topic, String(afterSeq))
  await waitFor(() => states.every((s) => truth.every((seq) => s.seen.has(seq))), { timeout: 30000, what: 'every event at every client' }).catch(() => {})
  await sleep(500)
  let lost = 0
  let duplicated = 0
  for (const s of states) {
    for (const seq of truth) {
      const count = s.seen.get(seq) || 0
      if (count === 0) lost += 1
      if (count > 1) duplicated += count - 1
    }
  }
  const changes = states.map((s) => s.changes)
  return { events: truth.length, lost, duplicated, changes }
}

test('clients spread over two web processes behind the proxy; faults lose and duplicate nothing', async () => {
  const topic = topics(h.schools.a).attendance
  const a = h.users.a
  const people = [['teacher', a.teacher], ['co-teacher', a.co_teacher], ['admin', a.admin]]
  const startSeq = probe('max-seq')
  const states = []
  for (const round of [1, 2]) {
    for (const [label, user] of people) states.push(clusterClient(user, `${label}-${round}`, topic, startSeq))
  }
  for (const s of states) {
    const joined = await subscribe(s.channel)
    assert.equal(joined.status, 'SUBSCRIBED', `${s.label}: ${joined.err}`)
    s.joins = 1
    s.channel.joinPush.receive('ok', () => (s.joins += 1))
  }

  // Spread: round robin puts three sockets on each web process.
  const sessions = await haproxySessions()
  assert.deepEqual(sessions, { web1: 3, web2: 3 })
  report.push(`spread: ${JSON.stringify(sessions)} sockets per web process (HAProxy round robin, not sticky)`)

  // Presence crosses processes: every client sees all six.
  for (const s of states) await s.channel.track({ on: s.label })
  await waitFor(() => states.every((s) => Object.keys(s.channel.presenceState()).length === 6), { what: 'six presences everywhere' })

  // Broadcasts cross processes: each client's ping reaches the five others.
  for (const s of states) {
    assert.equal(await s.channel.send({ type: 'broadcast', event: 'cluster_ping', payload: { from: s.label } }), 'ok')
  }
  await waitFor(() => states.every((s) => s.broadcasts.length === 5), { what: 'five pings at each client' })
  for (const s of states) assert.ok(!s.broadcasts.includes(s.label))

  // postgres_changes cross processes: writes through the proxy, through PgBouncer.
  const writer = startWriter()
  await waitFor(() => writer.writes >= 10, { what: 'ten writes' })
  await writer.stop()
  const steady = await account(states, topic, startSeq)
  report.push(`steady: ${steady.events} events x 6 clients, lost ${steady.lost}, duplicated ${steady.duplicated}`)
  assert.equal(steady.lost, 0)
  assert.equal(steady.duplicated, 0)
  assert.ok(steady.changes.every((n) => n === steady.events), `postgres_changes per client ${steady.changes}`)

  // A task queued through the primary runs on the worker.
  const worker = procs.find((p) => p.name === 'worker')
  const firstTask = probe('celery-task')
  await worker.waitOutput(new RegExp(`events.expire_events\\[${firstTask}\\] succeeded`), { timeout: 30000 })

  // RLS through PgBouncer: two schools' requests interleave on four server connections.
  const b = h.users.b
  const me = (user) => fetch(`${proxyHTTP}/api/me`, { headers: { Authorization: `Bearer ${h.token(user)}` } }).then((r) => r.json())
  const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? me(b.teacher) : me(a.teacher))))
  const wrong = answers.filter((body, i) => JSON.stringify(body).includes(i % 2 ? h.schools.a.org : h.schools.b.org))
  assert.equal(wrong.length, 0, 'a response carried the other school')
  assert.ok(answers.every((body, i) => JSON.stringify(body).includes(i % 2 ? h.schools.b.org : h.schools.a.org)))
  report.push('rls: 40 interleaved /api/me requests of two schools through PgBouncer (transaction mode, pool 4): 0 crossed')

  // Fault 1: kill a web process mid-stream.
  let from = probe('max-seq')
  let stream = startWriter()
  await sleep(1500)
  const joinsBefore = states.reduce((n, s) => n + s.joins, 0)
  await web[0].kill()
  await sleep(3000)
  await waitFor(() => web[0].output.split('Uvicorn running on').length > 2, { timeout: 20000, what: 'web-1 restarted' })
  await sleep(1500)
  await stream.stop()
  let result = await account(states, topic, from)
  const rejoined = states.reduce((n, s) => n + s.joins, 0) - joinsBefore
  report.push(`kill web-1: ${result.events} events x 6 clients, lost ${result.lost}, duplicated ${result.duplicated}; ${rejoined} channels rejoined through the proxy with replay; writer retried ${stream.failures} requests`)
  assert.equal(result.lost, 0)
  assert.equal(result.duplicated, 0)
  assert.ok(rejoined >= 3, `only ${rejoined} rejoins`)

  // Fault 2: kill the active listener; the standby takes over.
  from = probe('max-seq')
  stream = startWriter()
  await sleep(1500)
  const standbyMark = listeners[1].output.length
  const killedAt = Date.now()
  await listeners[0].kill()
  await listeners[1].waitOutput(/listener active/, { from: standbyMark, timeout: 15000 })
  const takeoverMs = Date.now() - killedAt
  await sleep(2500)
  await stream.stop()
  result = await account(states, topic, from)
  report.push(`kill active listener: standby active after ${takeoverMs} ms; ${result.events} events x 6 clients, lost ${result.lost}, duplicated ${result.duplicated}`)
  assert.equal(result.lost, 0)
  assert.equal(result.duplicated, 0)
  assert.ok(takeoverMs < LISTENER_TAKEOVER_BOUND_MS, `takeover took ${takeoverMs} ms`)
  listeners.reverse() // the restarted one is the standby now

  // Fault 3: kill the Redis primary; the sentinels promote the replica.
  from = probe('max-seq')
  stream = startWriter()
  await sleep(1500)
  const restartsBefore = procs.filter((p) => p.restart).reduce((n, p) => n + p.restarts, 0)
  const failedAt = Date.now()
  await procs.find((p) => p.name === 'redis-primary').kill()
  await waitFor(() => primaryPort() === ports.replica, { timeout: REDIS_FAILOVER_BOUND_MS, interval: 100, what: 'the sentinels to promote the replica' })
  const promotedMs = Date.now() - failedAt
  const writesAtPromotion = stream.writes
  await waitFor(() => stream.writes >= writesAtPromotion + 10, { timeout: 20000, what: 'writes after the failover' })
  await sleep(1500)
  await stream.stop()
  result = await account(states, topic, from)
  const restarts = procs.filter((p) => p.restart).reduce((n, p) => n + p.restarts, 0) - restartsBefore
  report.push(`kill Redis primary: replica promoted after ${promotedMs} ms; ${result.events} events x 6 clients, lost ${result.lost}, duplicated ${result.duplicated}; app process restarts ${restarts}; writer retried ${stream.failures} requests`)
  assert.equal(result.lost, 0)
  assert.equal(result.duplicated, 0)

  // After the failover, without any restart by hand: the worker answers through the new primary,
  // and presence and broadcasts still cross processes.
  const taskId = probe('celery-task')
  await worker.waitOutput(new RegExp(`events.expire_events\\[${taskId}\\] succeeded`), { timeout: 60000 })
  const taskMs = Date.now() - failedAt
  const pong = probe('celery-ping')
  const late = clusterClient(a.teacher, 'late', topic, probe('max-seq'))
  assert.equal((await subscribe(late.channel)).status, 'SUBSCRIBED')
  await late.channel.track({ on: 'late' })
  await waitFor(() => states.every((s) => 'late' in s.channel.presenceState()), { what: 'the late presence everywhere' })
  const before = states.map((s) => s.broadcasts.length)
  assert.equal(await late.channel.send({ type: 'broadcast', event: 'cluster_ping', payload: { from: 'late' } }), 'ok')
  await waitFor(() => states.every((s, i) => s.broadcasts.length === before[i] + 1), { what: 'the late ping everywhere' })
  report.push(`after failover: a task queued through the new primary ran on the worker ${taskMs} ms after the kill (worker restarts: ${worker.restarts}; remote-control ping answered by: ${JSON.stringify(pong)}); a new client's presence and broadcast reached all 6 others`)
  const perProcess = procs.filter((p) => p.restart).map((p) => `${p.name} ${p.restarts}`).join(', ')
  report.push(`restarts (compose-style supervisor): ${perProcess}`)
})
