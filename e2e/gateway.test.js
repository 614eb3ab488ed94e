// The unmodified @supabase/realtime-js client against the real server (daphne), both protocol versions.
'use strict'

const { test, before, after, afterEach, describe } = require('node:test')
const assert = require('node:assert/strict')
const { createHarness, subscribe, waitFor, topics } = require('./harness')

let h
let server

before(async () => {
  h = await createHarness()
  server = await h.startServer()
})

afterEach(async () => {
  await h.disconnectClients()
})

after(async () => {
  await h.close()
})

for (const vsn of ['1.0.0', '2.0.0']) {
  describe(`vsn ${vsn}`, () => {
    test('two teachers on one attendance topic: presence sync shows both, broadcast with and without self, ack', async () => {
      const topic = topics(h.schools.a).attendance
      const teacher = await h.client(server, h.users.a.teacher, { vsn })
      const admin = await h.client(server, h.users.a.admin, { vsn })
      const received = { teacher: [], admin: [] }
      const teacherChannel = teacher
        .channel(topic, { config: { presence: { key: 'teacher' }, broadcast: { self: true, ack: true } } })
        .on('presence', { event: 'sync' }, () => {})
        .on('broadcast', { event: 'row_focus' }, (msg) => received.teacher.push(msg))
      const adminChannel = admin
        .channel(topic, { config: { presence: { key: 'admin' } } })
        .on('presence', { event: 'sync' }, () => {})
        .on('broadcast', { event: 'row_focus' }, (msg) => received.admin.push(msg))
      assert.equal((await subscribe(teacherChannel)).status, 'SUBSCRIBED')
      assert.equal((await subscribe(adminChannel)).status, 'SUBSCRIBED')

      assert.equal(await teacherChannel.track({ activity: 'marking_attendance' }), 'ok')
      assert.equal(await adminChannel.track({ activity: 'reviewing' }), 'ok')
      await waitFor(() => Object.keys(adminChannel.presenceState()).length === 2, { what: 'presence of both' })
      await waitFor(() => Object.keys(teacherChannel.presenceState()).length === 2, { what: 'presence of both' })
      assert.equal(adminChannel.presenceState().teacher[0].activity, 'marking_attendance')
      assert.ok(adminChannel.presenceState().teacher[0].presence_ref)

      // self + ack: the sender hears its own message and send() waits for the server's ok.
      const ack = await teacherChannel.send({ type: 'broadcast', event: 'row_focus', payload: { n: 1 } })
      assert.equal(ack, 'ok')
      await waitFor(() => received.teacher.length === 1 && received.admin.length === 1, { what: 'broadcast 1' })
      assert.deepEqual(received.admin[0].payload, { n: 1 })
      // The server says who sent it; the sender cannot choose (issue 13 item 3).
      assert.equal(received.admin[0].meta.sender.user_id, h.users.a.teacher.id)
      assert.equal(received.admin[0].meta.sender.role, 'teacher')
      // Names the server broadcasts under are refused from clients.
      assert.equal(await teacherChannel.send({ type: 'broadcast', event: 'attendance_sync', payload: {} }), 'error')

      // Without self the admin does not hear itself.
      assert.equal(await adminChannel.send({ type: 'broadcast', event: 'row_focus', payload: { n: 2 } }), 'ok')
      await waitFor(() => received.teacher.length === 2, { what: 'broadcast 2' })
      await new Promise((resolve) => setTimeout(resolve, 300))
      assert.equal(received.admin.length, 1)

      // Untrack and leaving show up as presence leaves.
      await adminChannel.untrack()
      await waitFor(() => !teacherChannel.presenceState().admin, { what: 'admin untracked' })
      await teacherChannel.unsubscribe()
      await waitFor(() => !adminChannel.presenceState().teacher, { what: 'teacher left' })
      await admin.removeAllChannels()
    })

    test("another school's topic and an unrelated subject are refused", async () => {
      const client = await h.client(server, h.users.a.teacher, { vsn })
      const foreign = client.channel(topics(h.schools.b).attendance)
      const refused = await subscribe(foreign)
      assert.equal(refused.status, 'CHANNEL_ERROR')
      assert.match(String(refused.err?.message), /Unauthorized: the topic belongs to another organization/)
      client.removeChannel(foreign)
      const other = client.channel(topics(h.schools.a).otherAttendance)
      const refusedGroup = await subscribe(other)
      assert.equal(refusedGroup.status, 'CHANNEL_ERROR')
      assert.match(String(refusedGroup.err?.message), /Unauthorized: no access/)
      await client.removeAllChannels()
    })

    test('postgres_changes bindings are echoed so the client accepts them; a bad one is refused', async () => {
      const client = await h.client(server, h.users.a.teacher, { vsn })
      const systems = []
      const channel = client
        .channel(topics(h.schools.a).attendance)
        .on('postgres_changes', { event: '*', schema: 'public', table: 'attendance', filter: `group_id=eq.${h.schools.a.group}` }, () => {})
        .on('postgres_changes', { event: 'UPDATE', schema: 'public', table: 'attendance' }, () => {})
        .on('system', {}, (msg) => systems.push(msg))
      assert.equal((await subscribe(channel)).status, 'SUBSCRIBED')
      await waitFor(() => systems.some((m) => m.message === 'Subscribed to PostgreSQL'), { what: 'system message' })
      const bad = client
        .channel(topics(h.schools.a).groups)
        .on('postgres_changes', { event: '*', schema: 'public', table: 'secrets' }, () => {})
      const refused = await subscribe(bad)
      assert.equal(refused.status, 'CHANNEL_ERROR')
      assert.match(String(refused.err?.message), /InvalidPostgresChanges/)
      await client.removeAllChannels()
    })

    test('token refresh keeps the channel; an expiring token closes it with a system error', async () => {
      const user = h.users.a.teacher
      const client = await h.client(server, user, { vsn, token: h.token(user, { ttl: 4 }) })
      const systems = []
      let closed = false
      const channel = client.channel(topics(h.schools.a).groups).on('system', {}, (msg) => systems.push(msg))
      channel.subscribe((status) => {
        if (status === 'CLOSED') closed = true
      })
      await waitFor(() => channel.state === 'joined', { what: 'joined' })
      await client.setAuth(h.token(user, { ttl: 600 })) // pushes access_token to the joined channel
      await new Promise((resolve) => setTimeout(resolve, 4500))
      assert.equal(channel.state, 'joined')
      assert.equal(closed, false)

      const expiring = await h.client(server, user, { vsn, token: h.token(user, { ttl: 3 }) })
      const expired = []
      let expiredClosed = false
      const shortChannel = expiring.channel(topics(h.schools.a).attendance).on('system', {}, (msg) => expired.push(msg))
      shortChannel.subscribe((status) => {
        if (status === 'CLOSED') expiredClosed = true
      })
      await waitFor(() => expiredClosed, { timeout: 8000, what: 'channel closed on expiry' })
      assert.ok(expired.some((m) => m.status === 'error' && /Token has expired/.test(m.message)), JSON.stringify(expired))
      await client.removeAllChannels()
    })

    test('send() before joining falls back to REST and reaches joined sockets', async () => {
      const topic = topics(h.schools.a).attendance
      const listener = await h.client(server, h.users.a.admin, { vsn })
      const got = []
      const listening = listener.channel(topic).on('broadcast', { event: 'note_via_rest' }, (m) => got.push(m))
      assert.equal((await subscribe(listening)).status, 'SUBSCRIBED')
      const sender = await h.client(server, h.users.a.teacher, { vsn })
      const unjoined = sender.channel(topic)
      const originalWarn = console.warn
      console.warn = () => {} // realtime-js warns that the implicit REST fallback is deprecated
      try {
        assert.equal(await unjoined.send({ type: 'broadcast', event: 'note_via_rest', payload: { via: 'rest' } }), 'ok')
        // A server event name is refused on the REST fallback too (403 reserved_event).
        assert.equal(await unjoined.send({ type: 'broadcast', event: 'marking_completed', payload: {} }), 'error')
      } finally {
        console.warn = originalWarn
      }
      await waitFor(() => got.length === 1, { what: 'REST broadcast' })
      assert.deepEqual(got[0].payload, { via: 'rest' })
      assert.equal(got[0].meta.sender.user_id, h.users.a.teacher.id)
      await listener.removeAllChannels()
    })
  })
}

test('reconnect after the server drops a silent socket: the client rejoins and receives again', async () => {
  const quick = await h.startServer({ env: { REALTIME_IDLE_TIMEOUT_SECONDS: '2' } })
  const topic = topics(h.schools.a).attendance
  // Heartbeats far apart, so the server's idle limit drops the socket.
  const client = await h.client(quick, h.users.a.teacher, { heartbeatIntervalMs: 60000 })
  let subscribed = 0
  const got = []
  const channel = client.channel(topic).on('broadcast', { event: 'after_reconnect' }, (m) => got.push(m))
  channel.subscribe((status) => {
    if (status === 'SUBSCRIBED') subscribed += 1
  })
  await waitFor(() => subscribed >= 1, { what: 'first join' })
  await waitFor(() => subscribed >= 2, { timeout: 10000, what: 'rejoin after the server closed the socket' })
  const sender = await h.client(quick, h.users.a.admin)
  const senderChannel = sender.channel(topic)
  assert.equal((await subscribe(senderChannel)).status, 'SUBSCRIBED')
  await waitFor(() => channel.state === 'joined', { what: 'joined again' })
  await senderChannel.send({ type: 'broadcast', event: 'after_reconnect', payload: { ok: true } })
  await waitFor(() => got.length >= 1, { what: 'broadcast after reconnect' })
  await client.disconnect()
  await sender.disconnect()
  await quick.stop()
})
