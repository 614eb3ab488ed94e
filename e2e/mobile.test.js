// Connection profiles end to end with the unmodified realtime-js client: the profile rides on the
// socket URL (`params`) and on broadcasts to the reserved `connection:profile` channel; a
// battery-saving client outlives the foreground idle timeout; a poor connection gets high and
// critical events live, is told how many wait, and catches up when it improves; a batching
// channel gets one `batch` broadcast for a burst while a plain channel gets single events.
// The server runs with short intervals (a fifth to a twenty-fifth of the spec's; realtime-js drops
// a socket whose heartbeat reply takes longer than one interval, so not shorter on a loaded CI
// machine): foreground 5 s (idle timeout 12 s, the old timeout scaled), background /
// battery_saver 10 s (idle timeout 24 s), low battery 12 s (28.8 s).
'use strict'

const { test, before, after, afterEach } = require('node:test')
const assert = require('node:assert/strict')
const { createHarness, subscribe, waitFor, topics } = require('./harness')

const FOREGROUND_MS = 5000
const BACKGROUND_MS = 10000
const OLD_IDLE_TIMEOUT_MS = 12000

let h
let server

before(async () => {
  h = await createHarness({
    env: {
      REALTIME_IDLE_TIMEOUT_SECONDS: String(OLD_IDLE_TIMEOUT_MS / 1000),
      REALTIME_HEARTBEAT_INTERVAL_MS: String(FOREGROUND_MS),
      REALTIME_HEARTBEAT_BACKGROUND_MS: String(BACKGROUND_MS),
      REALTIME_HEARTBEAT_LOW_BATTERY_MS: '12000',
      REALTIME_HELD_NOTICE_SECONDS: '0.3',
    },
  })
  server = await h.startServer()
  await h.startListener()
})

afterEach(async () => {
  await h.disconnectClients()
})

after(async () => {
  await h.close()
})

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// Stored broadcasts on `topic` (e.g. ['ranking_update:medium']); resolves with their seqs.
function publish(topic, ...events) {
  const school = h.schools.a
  return JSON.parse(h.python('publish_events.py', [school.org, h.users.a.admin.id, topic, ...events])).seqs
}

async function client(user, params = {}, heartbeatIntervalMs = FOREGROUND_MS) {
  const token = h.token(user)
  const made = await h.client(server, user, { token, params: { apikey: token, ...params }, heartbeatIntervalMs })
  let closes = 0
  made.socketAdapter.onClose(() => (closes += 1))
  return { client: made, closes: () => closes }
}

function listen(channel, events) {
  const got = []
  for (const event of events) channel.on('broadcast', { event }, (message) => got.push(message))
  return got
}

test('a battery-saver client beating every 120 s (scaled) outlives the foreground idle timeout', async () => {
  const rankings = topics(h.schools.a).rankings
  // Both beat every 15 s: past the foreground idle timeout (12 s), within battery_saver's (24 s).
  const slowBeat = 1.25 * OLD_IDLE_TIMEOUT_MS
  const saver = await client(h.users.a.student, { performance_mode: 'battery_saver' }, slowBeat)
  // The same slow heartbeat on a foreground profile is a silent socket: the server closes it.
  const foreground = await client(h.users.a.parent, {}, slowBeat)
  const saverChannel = saver.client.channel(rankings)
  const got = listen(saverChannel, ['after_quiet'])
  assert.equal((await subscribe(saverChannel)).status, 'SUBSCRIBED')
  assert.equal((await subscribe(foreground.client.channel(rankings))).status, 'SUBSCRIBED')

  const profile = saver.client.channel('connection:profile')
  const system = []
  profile.on('system', {}, (message) => system.push(message))
  const joined = await subscribe(profile)
  assert.equal(joined.status, 'SUBSCRIBED')

  await sleep(1.6 * OLD_IDLE_TIMEOUT_MS)
  assert.equal(saver.closes(), 0, 'the battery-saver socket was never closed')
  assert.ok(foreground.closes() >= 1, 'the foreground socket with the same slow heartbeat was closed')
  const [seq] = publish(rankings, 'after_quiet:medium')
  await waitFor(() => got.length === 1, { what: 'the event after the quiet period', timeout: 20000 })
  assert.equal(got[0].meta.id, seq)
})

test('a poor connection gets high and critical live, is told what waits, and catches up when it improves', async () => {
  const rankings = topics(h.schools.a).rankings
  const phone = await client(h.users.a.student, { connection_quality: 'poor', network_type: 'cellular' })
  const channel = phone.client.channel(rankings)
  const got = listen(channel, ['ranking_update', 'ranking_celebration', 'emergency_alert'])
  const notices = []
  channel.on('system', {}, (message) => notices.push(message))
  assert.equal((await subscribe(channel)).status, 'SUBSCRIBED')
  const profile = phone.client.channel('connection:profile')
  const profileNotices = []
  profile.on('system', {}, (message) => profileNotices.push(message))
  assert.equal((await subscribe(profile)).status, 'SUBSCRIBED')

  const [low, high, medium, critical] = publish(
    rankings,
    'ranking_update:low',
    'ranking_celebration:high',
    'ranking_update:medium',
    'emergency_alert:critical',
  )
  await waitFor(() => notices.some((n) => n.extension === 'held_back'), { what: 'the held-back notice', timeout: 20000 })
  assert.deepEqual(got.map((m) => m.meta.id), [high, critical])
  const notice = notices.find((n) => n.extension === 'held_back')
  assert.equal(notice.held, 2)
  assert.equal(notice.oldest_id, low)
  assert.equal(notice.connection_quality, 'poor')

  assert.equal(await profile.send({ type: 'broadcast', event: 'update', payload: { connectionQuality: 'excellent' } }), 'ok')
  await waitFor(() => got.length === 4, { what: 'the held-back events', timeout: 20000 })
  assert.deepEqual(got.slice(2).map((m) => m.meta), [{ id: low, replayed: true }, { id: medium, replayed: true }])
  await waitFor(() => notices.filter((n) => n.extension === 'held_back').length === 2, { what: 'the caught-up notice', timeout: 20000 })
  assert.equal(notices.at(-1).held, 0)
  const updated = profileNotices.find((n) => n.extension === 'profile')
  assert.equal(updated.profile.connection_quality, 'excellent')
  assert.equal(updated.heartbeat_interval_ms, FOREGROUND_MS)
  await sleep(500)
  assert.equal(got.length, 4, 'nothing was delivered twice')
})

test('a batching channel gets one batch for a burst; a plain channel on the same topic gets single events', async () => {
  const rankings = topics(h.schools.a).rankings
  const batching = await client(h.users.a.student)
  const plain = await client(h.users.a.parent)
  const batchChannel = batching.client.channel(rankings, { config: { broadcast: { batch: true } } })
  const batches = listen(batchChannel, ['batch'])
  const singlesOnBatchChannel = listen(batchChannel, ['ranking_update'])
  const plainChannel = plain.client.channel(rankings)
  const singles = listen(plainChannel, ['ranking_update'])
  assert.equal((await subscribe(batchChannel)).status, 'SUBSCRIBED')
  assert.equal((await subscribe(plainChannel)).status, 'SUBSCRIBED')

  const seqs = publish(rankings, ...Array(5).fill('ranking_update:medium'))
  await waitFor(() => singles.length === 5 && batches.length === 1, { what: 'five singles and one batch', timeout: 20000 })
    .catch((err) => {
      const got = `${singles.length} singles, ${batches.length} batches, ${singlesOnBatchChannel.length} singles beside them`
      throw new Error(`${err.message}: got ${got}`)
    })
  assert.deepEqual(singles.map((m) => m.meta.id), seqs)
  assert.deepEqual(batches[0].meta.ids, seqs)
  assert.deepEqual(batches[0].payload.events.map((e) => e.meta.id), seqs)
  assert.deepEqual(batches[0].payload.events.map((e) => e.payload.index), [0, 1, 2, 3, 4])
  await sleep(500)
  assert.equal(batches.length, 1)
  assert.equal(singlesOnBatchChannel.length, 0)
})
