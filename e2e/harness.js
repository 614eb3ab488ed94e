// End-to-end harness: a fresh migrated database with two seeded schools, the real ASGI server
// (daphne, or uvicorn) on free ports, signed user tokens, and unmodified realtime-js clients.
//
//   const { createHarness } = require('./harness')
//   const h = await createHarness()                 // once per test file (creates the database)
//   const server = await h.startServer()            // { port, httpURL, endpoint, stop(), kill() }
//   await h.startListener()                          // manage.py realtime_listen (postgres_changes, outbox)
//   const client = await h.client(server, h.users.a.teacher, { vsn: '2.0.0' })
//   ...; await h.close()                             // disconnects clients, stops servers, drops the DB
//
// Environment: PYTHON (default ../.venv/bin/python when present, else python), DATABASE_URL /
// DATABASE_OWNER_URL / REDIS_URL as for the Python suite.
'use strict'

const { spawn, execFileSync } = require('node:child_process')
const crypto = require('node:crypto')
const fs = require('node:fs')
const path = require('node:path')
const WebSocket = require('ws')
const { RealtimeClient } = require('@supabase/realtime-js')

const ROOT = path.resolve(__dirname, '..')
const VENV_PYTHON = path.join(ROOT, '.venv', 'bin', 'python')
const PYTHON = process.env.PYTHON || (fs.existsSync(VENV_PYTHON) ? VENV_PYTHON : 'python')

function b64url(value) {
  return Buffer.from(value).toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_')
}

function signToken(key, user, { ttl = 3600, type = 'access', now = Math.floor(Date.now() / 1000) } = {}) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))
  const claims = b64url(
    JSON.stringify({
      sub: user.id,
      organization_id: user.organization_id,
      role: user.role,
      type,
      iat: now,
      exp: now + ttl,
      iss: 'harry-realtime',
      jti: crypto.randomBytes(8).toString('hex'),
    }),
  )
  const signature = crypto.createHmac('sha256', key).update(`${header}.${claims}`).digest('base64url')
  return `${header}.${claims}.${signature}`
}

function waitFor(predicate, { timeout = 10000, interval = 25, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout
  return new Promise((resolve, reject) => {
    const tick = () => {
      let value
      try {
        value = predicate()
      } catch (err) {
        return reject(err)
      }
      if (value) return resolve(value)
      if (Date.now() > deadline) return reject(new Error(`timed out waiting for ${what}`))
      setTimeout(tick, interval)
    }
    tick()
  })
}

function subscribe(channel, { timeout = 10000 } = {}) {
  // Resolves with the first terminal status: SUBSCRIBED, CHANNEL_ERROR (with the error), TIMED_OUT.
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ status: 'TIMED_OUT' }), timeout)
    channel.subscribe((status, err) => {
      clearTimeout(timer)
      resolve({ status, err })
    })
  })
}

class Server {
  constructor(child, port, kind) {
    this.child = child
    this.port = port
    this.kind = kind
    this.httpURL = `http://127.0.0.1:${port}`
    this.endpoint = `ws://127.0.0.1:${port}/realtime/v1`
    this.exited = new Promise((resolve) => child.once('exit', resolve))
  }

  async stop() {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM')
    await this.exited
  }

  // An abrupt crash: no disconnect handlers run, nothing is cleaned up by this process.
  async kill() {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL')
    await this.exited
  }
}

async function createHarness({ env = {}, dbName = `e2e_${process.pid}_${crypto.randomBytes(3).toString('hex')}` } = {}) {
  const prepared = JSON.parse(execFileSync(PYTHON, [path.join(__dirname, 'prepare.py'), 'create', dbName], {
    cwd: ROOT,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  }))
  const signingKey = crypto.randomBytes(32).toString('hex')
  const prefix = `e2e${crypto.randomBytes(4).toString('hex')}`
  const servers = []
  const listeners = []
  const clients = []
  const schools = prepared.schools
  const users = { a: schools.a.users, b: schools.b.users }

  const processEnv = (extra = {}) => ({
    ...process.env,
    ...prepared.env,
    JWT_SIGNING_KEY: signingKey,
    CHANNEL_LAYER_PREFIX: prefix,
    REALTIME_API_KEY: '',
    DJANGO_SETTINGS_MODULE: 'harry_realtime.settings',
    PYTHONUNBUFFERED: '1',
    ...env,
    ...extra,
  })

  const harness = {
    schools,
    users,
    signingKey,
    token: (user, options) => signToken(signingKey, user, options),
    // The environment of this harness's server processes (database, channel-layer prefix, key).
    env: processEnv,

    // A REST call under /api/realtime/ as `user`: { status, body }.
    async realtimeApi(server, user, method, path, body) {
      const response = await fetch(`${server.httpURL}/api/realtime/${path}`, {
        method,
        headers: { Authorization: `Bearer ${harness.token(user)}`, 'Content-Type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      })
      return { status: response.status, body: await response.json() }
    },

    // Start the outbox listener (`manage.py realtime_listen`) on this harness's database and
    // channel-layer prefix; resolves once it is the active (leader) listener and has fanned out the
    // seed's events, so a test's subscribers see only the changes the test makes. Stopped by close().
    async startListener({ pollInterval = 1, env: extra = {} } = {}) {
      const args = ['manage.py', 'realtime_listen', '--poll-interval', String(pollInterval)]
      const child = spawn(PYTHON, args, { cwd: ROOT, env: processEnv({ LOG_LEVEL: 'INFO', ...extra }), stdio: ['ignore', 'pipe', 'pipe'] })
      let output = ''
      await new Promise((resolve, reject) => {
        const onData = (chunk) => {
          output += chunk
          if (output.includes('listener active')) resolve()
        }
        child.stdout.on('data', onData)
        child.stderr.on('data', onData)
        child.once('exit', (code) => reject(new Error(`realtime_listen exited (${code}) before it was active:\n${output}`)))
        setTimeout(() => reject(new Error(`realtime_listen did not become active:\n${output}`)), 30000)
      })
      if (process.env.E2E_SERVER_LOGS) {
        child.stderr.on('data', (chunk) => process.stderr.write(chunk))
      }
      const started = new Server(child, null, 'listener')
      listeners.push(started)
      harness.python('outbox_drained.py', ['30'])
      return started
    },

    // Run a Python script of this folder against the harness's database; returns its stdout.
    python(script, args = []) {
      return execFileSync(PYTHON, [path.join(__dirname, script), ...args], {
        cwd: ROOT,
        env: processEnv(),
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'inherit'],
      })
    },

    // Start the real ASGI server (daphne by default) on a free port, sharing this harness's
    // database and Redis channel-layer prefix with every other server it starts.
    async startServer({ server = 'daphne', env: extra = {} } = {}) {
      const childEnv = processEnv(extra)
      const args =
        server === 'uvicorn'
          ? ['-m', 'uvicorn', '--host', '127.0.0.1', '--port', '0', '--log-level', 'info', 'harry_realtime.asgi:application']
          : ['-m', 'daphne', '-e', 'tcp:port=0:interface=127.0.0.1', 'harry_realtime.asgi:application']
      const child = spawn(PYTHON, args, { cwd: ROOT, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] })
      let output = ''
      const port = await new Promise((resolve, reject) => {
        const pattern = /(?:Listening on TCP address|Uvicorn running on http:\/\/)\s*127\.0\.0\.1:(\d+)/
        const onData = (chunk) => {
          output += chunk
          const match = output.match(pattern)
          if (match) resolve(Number(match[1]))
        }
        child.stdout.on('data', onData)
        child.stderr.on('data', onData)
        child.once('exit', (code) => reject(new Error(`${server} exited (${code}) before listening:\n${output}`)))
        setTimeout(() => reject(new Error(`${server} did not start:\n${output}`)), 30000)
      })
      if (process.env.E2E_SERVER_LOGS) {
        child.stderr.on('data', (chunk) => process.stderr.write(chunk))
      }
      const started = new Server(child, port, server)
      servers.push(started)
      return started
    },

    // An unmodified realtime-js client for `user` against `server`; the user's JWT is both the
    // apikey and the access token, as the mobile apps send it.
    async client(server, user, options = {}) {
      const { token = harness.token(user), ...rest } = options
      const client = new RealtimeClient(server.endpoint, {
        transport: WebSocket,
        params: { apikey: token },
        timeout: 5000,
        reconnectAfterMs: () => 200,
        ...rest,
      })
      await client.setAuth(token)
      clients.push(client)
      return client
    },

    // Disconnect every client made so far (their connection slots count against the user's limit).
    async disconnectClients() {
      for (const client of clients.splice(0)) {
        try {
          await client.disconnect()
        } catch {
          // already gone with its server
        }
      }
    },

    async close() {
      for (const client of clients) {
        try {
          await client.disconnect()
        } catch {
          // already gone with its server
        }
      }
      for (const server of servers) await server.stop()
      for (const listener of listeners) await listener.stop()
      execFileSync(PYTHON, [path.join(__dirname, 'prepare.py'), 'drop', dbName], { cwd: ROOT, stdio: 'inherit' })
    },
  }
  return harness
}

function topics(school) {
  return {
    attendance: `attendance:org_${school.org}:group_${school.group}`,
    otherAttendance: `attendance:org_${school.org}:group_${school.other_group}`,
    rankings: `rankings:org_${school.org}:student_${school.student}`,
    tasks: `tasks:org_${school.org}:student_${school.student}`,
    groups: `groups:org_${school.org}:teacher_${school.teacher}`,
    notifications: (role = 'all') => `notifications:org_${school.org}:role_${role}`,
  }
}

module.exports = { createHarness, subscribe, waitFor, topics, signToken, PYTHON, ROOT }
