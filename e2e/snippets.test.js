'use strict'
// Every client snippet of README.md and docs/ is a file of e2e/snippets/, quoted verbatim in the
// docs (checked here), and run here as written against a real server (uvicorn) and listener.

const assert = require('node:assert/strict')
const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const { after, before, describe, test } = require('node:test')

const { createHarness, waitFor } = require('./harness')

const ROOT = path.resolve(__dirname, '..')
const SNIPPETS = path.join(__dirname, 'snippets')
const QUOTED_IN = {
  'realtime-in-one-screen.mjs': 'README.md',
  'using-the-api.sh': 'README.md',
  'connecting.mjs': 'docs/realtime.md',
  'cultural-context.sh': 'docs/culture.md',
}

// A running snippet: its output lines, until stopped.
function run(command, args, env) {
  const child = spawn(command, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  const lines = []
  let errors = ''
  child.stdout.on('data', (chunk) => lines.push(...chunk.toString().split('\n').filter(Boolean)))
  child.stderr.on('data', (chunk) => { errors += chunk })
  return { child, lines, errors: () => errors }
}

describe('documentation snippets', () => {
  let h, server, a

  before(async () => {
    h = await createHarness({ env: { FAST_PASSWORD_HASHER: '1' } })
    server = await h.startServer({ server: 'uvicorn' })
    await h.startListener()
    h.python('seed_demo.py')
    a = h.schools.a
  })

  after(async () => {
    await h.close()
  })

  test('each snippet file is quoted verbatim in its document', () => {
    for (const [file, doc] of Object.entries(QUOTED_IN)) {
      const code = fs.readFileSync(path.join(SNIPPETS, file), 'utf8')
      const text = fs.readFileSync(path.join(ROOT, doc), 'utf8')
      assert.ok(text.includes('\n' + code + '```'), `${doc} does not quote e2e/snippets/${file} as it is`)
    }
  })

  async function markAttendance(status) {
    const teacher = h.users.a.teacher
    const response = await h.realtimeApi(server, teacher, 'POST', 'attendance/mark', {
      groupId: a.group, studentId: a.student, status,
    })
    assert.equal(response.status, 200, JSON.stringify(response.body))
  }

  test('README "Realtime in one screen" subscribes and receives a change', async () => {
    const teacher = h.users.a.teacher
    const snippet = run(process.execPath, [path.join(SNIPPETS, 'realtime-in-one-screen.mjs')], {
      ...process.env,
      HOST: `127.0.0.1:${server.port}`,
      ACCESS_JWT: h.token(teacher),
      ORG_ID: a.org,
      GROUP_ID: a.group,
      USER_ID: teacher.id,
    })
    try {
      await waitFor(() => snippet.lines.includes('SUBSCRIBED'), { what: `SUBSCRIBED (${snippet.errors()})` })
      await markAttendance('late')
      await waitFor(() => snippet.lines.some((l) => l.startsWith('attendance_sync ')), { what: 'the broadcast' })
      await waitFor(() => snippet.lines.some((l) => l.startsWith('postgres_changes ') && l.endsWith(' late')), { what: 'the change' })
      assert.equal(snippet.errors(), '')
    } finally {
      snippet.child.kill()
    }
  })

  async function demoLogin(username) {
    const response = await fetch(`${server.httpURL}/api/auth/token`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password: 'harry-demo' }),
    })
    assert.equal(response.status, 200)
    const access = (await response.json()).access
    const me = await (await fetch(`${server.httpURL}/api/me`, { headers: { authorization: `Bearer ${access}` } })).json()
    return { access, me }
  }

  test('docs/realtime.md "Connecting" signs in, subscribes, tracks, receives and acknowledges', async () => {
    const snippet = run(process.execPath, [path.join(SNIPPETS, 'connecting.mjs')], {
      ...process.env,
      HOST: `127.0.0.1:${server.port}`,
      LOGIN: 'teacher@harry.uz',
      PASSWORD: 'harry-demo',
    })
    try {
      await waitFor(() => snippet.lines.includes('SUBSCRIBED'), { what: `SUBSCRIBED (${snippet.errors()})` })
      await waitFor(() => snippet.lines.includes('presence 1'), { what: 'its own presence' })
      const teacher = await demoLogin('teacher@harry.uz')
      const student = await demoLogin('student@harry.uz')
      const response = await fetch(`${server.httpURL}/api/realtime/attendance/mark`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${teacher.access}` },
        body: JSON.stringify({ groupId: teacher.me.groups[0].id, studentId: student.me.student_id, status: 'late' }),
      })
      assert.equal(response.status, 200, await response.text())
      await waitFor(() => snippet.lines.some((l) => l.startsWith('attendance_sync ')), { what: 'the broadcast' })
      await waitFor(() => snippet.lines.some((l) => l.startsWith('postgres_changes late ')), { what: 'the change' })
      await waitFor(() => snippet.lines.includes('delivery_ack ok'), { what: 'the acknowledgement' })
      assert.equal(snippet.errors(), '')
    } finally {
      snippet.child.kill()
    }
  })

  test('README "Using the API" and docs/culture.md commands run as written', () => {
    const env = { ...h.env(), HOST: `127.0.0.1:${server.port}`, PATH: `${path.join(ROOT, '.venv', 'bin')}:${process.env.PATH}` }
    const me = JSON.parse(execFileSync('bash', [path.join(SNIPPETS, 'using-the-api.sh')], { cwd: ROOT, env, encoding: 'utf8' }))
    assert.equal(me.username, 'teacher@harry.uz')
    assert.ok(me.topics.some((t) => t.startsWith('attendance:')))

    const login = execFileSync('curl', ['-s', '-X', 'POST', `http://${env.HOST}/api/auth/token`, '-H', 'content-type: application/json',
      '-d', JSON.stringify({ username: 'teacher@harry.uz', password: 'harry-demo' })], { encoding: 'utf8' })
    const out = execFileSync('bash', [path.join(SNIPPETS, 'cultural-context.sh')], {
      cwd: ROOT, env: { ...env, ACCESS: JSON.parse(login).access }, encoding: 'utf8',
    })
    // curl's compact JSON, then the command's indented JSON, twice.
    const dates = [...out.matchAll(/"hijri_date": ?"([\d-]+)"/g)].map((m) => m[1])
    assert.equal(dates.length, 3, out)
    assert.equal([...out.matchAll(/"fajr": ?"/g)].length, 3, out)
  })
})
