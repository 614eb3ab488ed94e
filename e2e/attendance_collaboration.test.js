// Attendance collaboration end to end: the unmodified realtime-js client and the REST API together.
// Two teachers of one group (prepare.py assigns a co-teacher to group A) collaborate on its
// attendance topic.
'use strict'

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { createHarness, subscribe, waitFor, topics } = require('./harness')

let h
let server

before(async () => {
  h = await createHarness()
  server = await h.startServer()
})

after(async () => {
  await h.close()
})

const api = (user, method, path, body) => h.realtimeApi(server, user, method, path, body)

// Polls an async read until `accept` holds (the table mirror writes just after the socket replies).
async function eventually(read, accept, what, timeout = 10000) {
  const deadline = Date.now() + timeout
  for (;;) {
    const value = await read()
    if (accept(value)) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(value)}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

async function joinAttendance(user, device, vsn) {
  const connected = await api(user, 'POST', 'connect', {
    deviceId: device,
    platform: 'android',
    appVersion: '1.0.0',
    subscriptionTypes: ['attendance'],
    performanceMode: 'standard',
  })
  assert.equal(connected.status, 200, JSON.stringify(connected.body))
  const topic = topics(h.schools.a).attendance
  assert.ok(connected.body.subscriptionChannels.includes(topic))
  const token = h.token(user)
  const client = await h.client(server, user, {
    vsn,
    token,
    params: { apikey: token, connection_id: connected.body.connectionId, device_id: device },
  })
  const events = []
  const channel = client
    .channel(topic, { config: { presence: { key: user.id } } })
    .on('presence', { event: 'sync' }, () => {})
    .on('broadcast', { event: 'marking_in_progress' }, (message) => events.push(message))
    .on('broadcast', { event: 'marking_completed' }, (message) => events.push(message))
  assert.equal((await subscribe(channel)).status, 'SUBSCRIBED')
  return { client, channel, events, connectionId: connected.body.connectionId }
}

for (const vsn of ['1.0.0', '2.0.0']) {
  test(`vsn ${vsn}: presence shows both markers with their activity; marking is announced and guarded`, async () => {
    const school = h.schools.a
    const { teacher, co_teacher: coTeacher } = h.users.a
    const first = await joinAttendance(teacher, `teacher-phone-${vsn}`, vsn)
    const second = await joinAttendance(coTeacher, `co-teacher-tablet-${vsn}`, vsn)

    assert.equal(await first.channel.track({ activity: 'marking_attendance', groupId: school.group, status: 'in_class' }), 'ok')
    assert.equal(await second.channel.track({ activity: 'reviewing_attendance', groupId: school.group }), 'ok')
    await waitFor(() => Object.keys(second.channel.presenceState()).length === 2, { what: 'both in presence' })
    await waitFor(() => Object.keys(first.channel.presenceState()).length === 2, { what: 'both in presence' })
    assert.equal(second.channel.presenceState()[teacher.id][0].activity, 'marking_attendance')
    assert.equal(first.channel.presenceState()[coTeacher.id][0].activity, 'reviewing_attendance')

    // The socket presence is mirrored into realtime_presence for the REST view.
    const listed = await eventually(
      () => api(teacher, 'GET', `presence?group=${school.group}`),
      (r) => r.status === 200 && r.body.presence.length === 2,
      'REST presence of the group',
    )
    const byUser = Object.fromEntries(listed.body.presence.map((p) => [p.userId, p]))
    assert.equal(byUser[teacher.id].activity, 'marking_attendance')
    assert.equal(byUser[teacher.id].status, 'in_class')
    assert.equal(byUser[coTeacher.id].activity, 'reviewing_attendance')

    // The teacher starts marking: the co-teacher sees marking_in_progress.
    const started = await api(teacher, 'POST', 'attendance/marking', { groupId: school.group })
    assert.equal(started.status, 200, JSON.stringify(started.body))
    await waitFor(() => second.events.some((m) => m.event === 'marking_in_progress'), { what: 'marking_in_progress' })
    const progress = second.events.find((m) => m.event === 'marking_in_progress')
    assert.equal(progress.payload.teacher.userId, teacher.id)
    assert.deepEqual(progress.payload.studentIds, [school.student])

    // Marking the same student meanwhile is a conflict, not a silent overwrite.
    const clash = await api(coTeacher, 'POST', 'attendance/mark', {
      groupId: school.group,
      studentId: school.student,
      status: 'absent',
    })
    assert.equal(clash.status, 409)
    assert.equal(clash.body.error.code, 'concurrent_marking')
    assert.equal(clash.body.error.details.conflicts[0].markingTeacher.userId, teacher.id)

    const marked = await api(teacher, 'POST', 'attendance/mark', {
      groupId: school.group,
      studentId: school.student,
      status: vsn === '1.0.0' ? 'late' : 'present',
    })
    assert.equal(marked.status, 200, JSON.stringify(marked.body))
    await waitFor(() => second.events.some((m) => m.event === 'marking_completed'), { what: 'marking_completed' })
    const completed = second.events.find((m) => m.event === 'marking_completed')
    assert.equal(completed.payload.result.attendanceId, marked.body.attendance.id)

    const finished = await api(teacher, 'DELETE', `attendance/marking/${school.group}`)
    assert.equal(finished.status, 200)

    // The teacher's socket goes away: the others see the leave and the table shows them offline.
    await first.client.disconnect()
    await waitFor(() => !second.channel.presenceState()[teacher.id], { what: 'teacher left presence' })
    const after = await eventually(
      () => api(coTeacher, 'GET', `presence?group=${school.group}`),
      (r) => r.status === 200 && r.body.presence.length === 1,
      'teacher offline in REST presence',
    )
    assert.equal(after.body.presence[0].userId, coTeacher.id)
    await second.client.removeAllChannels()
  })
}
