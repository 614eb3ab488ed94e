// Two server processes (daphne and uvicorn) sharing Redis: broadcasts and presence cross between
// them, and the presences of a process that crashes disappear within a bounded time.
'use strict'

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { createHarness, subscribe, waitFor, topics } = require('./harness')

const NODE_TTL_SECONDS = 2
let h

before(async () => {
  h = await createHarness({ env: { REALTIME_PRESENCE_NODE_TTL_SECONDS: String(NODE_TTL_SECONDS) } })
})

after(async () => {
  await h.close()
})

test('broadcast and presence cross processes; a killed process loses its presences', async () => {
  const first = await h.startServer({ server: 'daphne' })
  const second = await h.startServer({ server: 'uvicorn' })
  const topic = topics(h.schools.a).attendance
  const teacher = await h.client(first, h.users.a.teacher, { vsn: '2.0.0' })
  const admin = await h.client(second, h.users.a.admin, { vsn: '1.0.0' })
  const got = { teacher: [], admin: [] }
  const leaves = []
  const teacherChannel = teacher
    .channel(topic, { config: { presence: { key: 'teacher' } } })
    .on('presence', { event: 'leave' }, ({ key }) => leaves.push(key))
    .on('broadcast', { event: 'row_focus' }, (m) => got.teacher.push(m.payload))
  const adminChannel = admin
    .channel(topic, { config: { presence: { key: 'admin' } } })
    .on('presence', { event: 'sync' }, () => {})
    .on('broadcast', { event: 'row_focus' }, (m) => got.admin.push(m.payload))
  assert.equal((await subscribe(teacherChannel)).status, 'SUBSCRIBED')
  assert.equal((await subscribe(adminChannel)).status, 'SUBSCRIBED')
  await teacherChannel.track({ on: first.kind })
  await adminChannel.track({ on: second.kind })
  await waitFor(() => Object.keys(teacherChannel.presenceState()).length === 2, { what: 'presence on daphne' })
  await waitFor(() => Object.keys(adminChannel.presenceState()).length === 2, { what: 'presence on uvicorn' })
  assert.equal(teacherChannel.presenceState().admin[0].on, 'uvicorn')
  assert.equal(adminChannel.presenceState().teacher[0].on, 'daphne')

  await teacherChannel.send({ type: 'broadcast', event: 'row_focus', payload: { from: 'daphne' } })
  await adminChannel.send({ type: 'broadcast', event: 'row_focus', payload: { from: 'uvicorn' } })
  await waitFor(() => got.teacher.length === 1 && got.admin.length === 1, { what: 'cross-process broadcasts' })
  assert.deepEqual(got.admin, [{ from: 'daphne' }])
  assert.deepEqual(got.teacher, [{ from: 'uvicorn' }])

  const killedAt = Date.now()
  await second.kill()
  await waitFor(() => leaves.includes('admin'), { timeout: 15000, what: "the killed process's presence to leave" })
  const seconds = (Date.now() - killedAt) / 1000
  // Bound: node TTL plus one liveness interval (TTL / 3) plus delivery slack.
  assert.ok(seconds < NODE_TTL_SECONDS * 2 + 2, `took ${seconds}s`)
  assert.deepEqual(Object.keys(teacherChannel.presenceState()), ['teacher'])
  await admin.disconnect()
  await teacher.disconnect()
})
