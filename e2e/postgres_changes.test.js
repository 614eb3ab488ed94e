// postgres_changes end to end: a row change commits, the trigger stores it in the outbox, the real
// listener (`manage.py realtime_listen`) fans it out, and the unmodified realtime-js client's
// `.on('postgres_changes', …)` callback fires — only for the group its filter names. Then replay on
// join: a client that was away asks for what it missed since its last seen time.
'use strict'

const { test, before, after, afterEach, describe } = require('node:test')
const assert = require('node:assert/strict')
const { createHarness, subscribe, waitFor, topics } = require('./harness')

const QUIET_MS = 1500 // how long "nothing arrives" is watched for; the listener delivers in ~10 ms
const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/

let h
let server

before(async () => {
  h = await createHarness()
  server = await h.startServer()
  await h.startListener()
})

afterEach(async () => {
  await h.disconnectClients()
})

after(async () => {
  await h.close()
})

const api = (user, method, path, body) => h.realtimeApi(server, user, method, path, body)

// The teacher marks their group's student through the REST API (a real UPDATE/INSERT of attendance).
async function markGroupA(status) {
  const school = h.schools.a
  const marked = await api(h.users.a.teacher, 'POST', 'attendance/mark', {
    groupId: school.group,
    studentId: school.student,
    status,
  })
  assert.equal(marked.status, 200, JSON.stringify(marked.body))
  assert.equal(marked.body.attendance.status, status)
  return marked.body.attendance
}

// Group B has no teacher, so the API refuses to mark it; the same kind of write goes through a
// helper in the school admin's tenant context (RLS applies, the trigger captures it).
function writeGroupB(status) {
  const school = h.schools.a
  const admin = h.users.a.admin
  const out = JSON.parse(
    h.python('attendance_write.py', [school.org, admin.id, admin.role, school.other_group, school.other_student, status]),
  )
  assert.equal(out.group_id, school.other_group)
  return out
}

function attendanceBinding(group, event = '*') {
  return { event, schema: 'public', table: 'attendance', filter: `group_id=eq.${group}` }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

for (const vsn of ['1.0.0', '2.0.0']) {
  describe(`vsn ${vsn}`, () => {
    test("a change to the group's attendance fires the filtered callback; another group's does not", async () => {
      const school = h.schools.a
      const status = vsn === '1.0.0' ? 'late' : 'absent'
      const otherStatus = vsn === '1.0.0' ? 'sick' : 'excused'

      const teacher = await h.client(server, h.users.a.teacher, { vsn })
      const changes = []
      const misfiltered = [] // same topic, a filter no group-A row matches: must stay silent
      const teacherChannel = teacher
        .channel(topics(school).attendance)
        .on('postgres_changes', attendanceBinding(school.group), (payload) => changes.push(payload))
        .on('postgres_changes', attendanceBinding(school.other_group), (payload) => misfiltered.push(payload))
      assert.equal((await subscribe(teacherChannel)).status, 'SUBSCRIBED')

      // A control subscriber on group B proves the group-B change did go through the pipeline,
      // so the teacher's silence below is the filter's doing, not a stalled listener.
      const admin = await h.client(server, h.users.a.admin, { vsn })
      const otherChanges = []
      const adminChannel = admin
        .channel(topics(school).otherAttendance)
        .on('postgres_changes', attendanceBinding(school.other_group), (payload) => otherChanges.push(payload))
      assert.equal((await subscribe(adminChannel)).status, 'SUBSCRIBED')

      const before = Date.now()
      const row = await markGroupA(status)
      await waitFor(() => changes.length >= 1, { what: 'the postgres_changes callback' })
      const change = changes[0]
      assert.ok(['UPDATE', 'INSERT'].includes(change.eventType), change.eventType)
      assert.equal(change.schema, 'public')
      assert.equal(change.table, 'attendance')
      assert.equal(change.new.id, row.id)
      assert.equal(change.new.group_id, school.group)
      assert.equal(change.new.student_id, school.student)
      assert.equal(change.new.status, status)
      assert.match(change.commit_timestamp, ISO_MS)
      const committed = Date.parse(change.commit_timestamp)
      assert.ok(committed >= before - 1000 && committed <= Date.now() + 1000, change.commit_timestamp)
      if (change.eventType === 'UPDATE') assert.equal(change.old.group_id, school.group)

      const other = writeGroupB(otherStatus)
      await waitFor(() => otherChanges.length >= 1, { what: "group B's change at its own subscriber" })
      assert.equal(otherChanges[0].new.id, other.id)
      assert.equal(otherChanges[0].new.group_id, school.other_group)
      assert.equal(otherChanges[0].new.status, otherStatus)
      await sleep(QUIET_MS)
      assert.equal(changes.length, 1, `the group A filter let through: ${JSON.stringify(changes.slice(1))}`)
      assert.deepEqual(misfiltered, [])
      assert.equal(otherChanges.length, 1)
    })

    test('rejoin with replay since the last seen time gets exactly the missed changes, marked replayed', async () => {
      const school = h.schools.a
      const topic = topics(school).attendance
      const statuses = vsn === '1.0.0' ? ['present', 'late', 'absent', 'excused'] : ['sick', 'present', 'late', 'absent']

      // Listening: one live change, remembered by the time it was seen.
      const first = await h.client(server, h.users.a.teacher, { vsn })
      const live = { changes: [], syncs: [] }
      const firstChannel = first
        .channel(topic, { config: { private: true } })
        .on('postgres_changes', attendanceBinding(school.group), (payload) => live.changes.push(payload))
        .on('broadcast', { event: 'attendance_sync' }, (message) => live.syncs.push(message))
      assert.equal((await subscribe(firstChannel)).status, 'SUBSCRIBED')
      await markGroupA(statuses[0])
      await waitFor(() => live.changes.length === 1 && live.syncs.length === 1, { what: 'the live change' })
      assert.equal(live.changes[0].new.status, statuses[0])
      assert.equal(live.syncs[0].meta.replayed, undefined)
      const lastSeenId = live.syncs[0].meta.id
      assert.ok(Number.isInteger(lastSeenId), JSON.stringify(live.syncs[0].meta))
      await sleep(20)
      const lastSeenAt = Date.now()
      await first.disconnect()

      // Away: two changes of the group and one of another group happen.
      await sleep(20)
      await markGroupA(statuses[1])
      writeGroupB('emergency')
      await markGroupA(statuses[2])

      // Back: replay since the last seen time, then live again.
      const second = await h.client(server, h.users.a.teacher, { vsn })
      const back = { changes: [], syncs: [] }
      const secondChannel = second
        .channel(topic, { config: { private: true, broadcast: { replay: { since: lastSeenAt, limit: 50 } } } })
        .on('postgres_changes', attendanceBinding(school.group), (payload) => back.changes.push(payload))
        .on('broadcast', { event: 'attendance_sync' }, (message) => back.syncs.push(message))
      assert.equal((await subscribe(secondChannel)).status, 'SUBSCRIBED')
      await waitFor(() => back.changes.length >= 2 && back.syncs.length >= 2, { what: 'the replayed changes' })
      await sleep(QUIET_MS)
      assert.deepEqual(
        back.changes.map((c) => [c.eventType, c.new.group_id, c.new.status]),
        [
          ['UPDATE', school.group, statuses[1]],
          ['UPDATE', school.group, statuses[2]],
        ],
      )
      assert.deepEqual(
        back.syncs.map((m) => [m.meta.replayed, m.payload.payload.groupId, m.payload.payload.status]),
        [
          [true, school.group, statuses[1]],
          [true, school.group, statuses[2]],
        ],
      )
      const ids = back.syncs.map((m) => m.meta.id)
      assert.ok(ids[0] > lastSeenId && ids[1] > ids[0], `replayed ids ${ids} after ${lastSeenId}`)

      // A live change after the replay: delivered once, not marked replayed.
      await markGroupA(statuses[3])
      await waitFor(() => back.changes.length === 3 && back.syncs.length === 3, { what: 'the live change after replay' })
      assert.equal(back.changes[2].new.status, statuses[3])
      assert.equal(back.syncs[2].meta.replayed, undefined)
      assert.ok(back.syncs[2].meta.id > ids[1])
      await sleep(300)
      assert.equal(back.changes.length, 3)
      assert.equal(back.syncs.length, 3)
    })
  })
}
