// A user deactivated directly in the database loses their live sockets on every server process
// within seconds (each process polls for the users of its own sockets), while others stay joined.
'use strict'

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { createHarness, subscribe, waitFor, topics } = require('./harness')

let h

before(async () => {
  h = await createHarness()
})

after(async () => {
  await h.close()
})

test('deactivating a user closes their sockets on both server processes', async () => {
  const daphne = await h.startServer({ server: 'daphne' })
  const uvicorn = await h.startServer({ server: 'uvicorn' })
  const topic = topics(h.schools.a).attendance
  const channels = {}
  const systemErrors = []
  for (const [name, server, user] of [
    ['teacherOnDaphne', daphne, h.users.a.teacher],
    ['teacherOnUvicorn', uvicorn, h.users.a.teacher],
    ['adminOnUvicorn', uvicorn, h.users.a.admin],
  ]) {
    const client = await h.client(server, user, { vsn: '2.0.0' })
    channels[name] = client
      .channel(topic)
      .on('system', {}, (message) => message.status === 'error' && systemErrors.push([name, message.message]))
    assert.equal((await subscribe(channels[name])).status, 'SUBSCRIBED', name)
  }

  const started = Date.now()
  h.python('user_deactivate.py', [h.users.a.teacher.id])
  await waitFor(() => channels.teacherOnDaphne.state === 'closed' && channels.teacherOnUvicorn.state === 'closed', {
    timeout: 10000,
    what: "the deactivated teacher's channels to close",
  })
  const seconds = (Date.now() - started) / 1000
  // Bound: one poll interval (REALTIME_REVOCATION_POLL_SECONDS, 2 s) plus delivery slack.
  assert.ok(seconds < 5, `took ${seconds}s`)
  assert.deepEqual(systemErrors.map(([name]) => name).sort(), ['teacherOnDaphne', 'teacherOnUvicorn'])
  assert.match(systemErrors[0][1], /may no longer sign in/)
  assert.equal(channels.adminOnUvicorn.state, 'joined')
  await h.disconnectClients()
})
