// Families and school-wide messages end to end, with the unmodified realtime-js client:
// a teacher marks a child absent and the parent's client hears about it; an admin's emergency
// alert reaches a student, a teacher and a parent while the school is at prayer (when a plain
// announcement waits for the prayer window to end).
'use strict'

const { test, before, after, afterEach } = require('node:test')
const assert = require('node:assert/strict')
const { createHarness, subscribe, waitFor, topics } = require('./harness')

const QUIET_MS = 1500 // how long "nothing arrives" is watched for; the listener delivers in ~10 ms

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

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// A client of `user` joined to its role's notifications topic, collecting the named broadcasts.
async function joinNotifications(role, user, events) {
  const client = await h.client(server, user, { vsn: '2.0.0' })
  const received = []
  let channel = client.channel(topics(h.schools.a).notifications(role))
  for (const event of events) {
    channel = channel.on('broadcast', { event }, (message) => received.push(message))
  }
  assert.equal((await subscribe(channel)).status, 'SUBSCRIBED')
  return received
}

test("a teacher marks a child absent and the parent's client receives the notice", async () => {
  const school = h.schools.a
  const parentNotices = await joinNotifications('parent', h.users.a.parent, ['family_notice'])
  const studentNotices = await joinNotifications('student', h.users.a.student, ['family_notice'])

  const marked = await h.realtimeApi(server, h.users.a.teacher, 'POST', 'attendance/mark', {
    groupId: school.group,
    studentId: school.student,
    status: 'absent',
  })
  assert.equal(marked.status, 200, JSON.stringify(marked.body))

  await waitFor(() => parentNotices.length >= 1, { what: "the parent's family notice" })
  const { payload, meta } = parentNotices[0]
  assert.equal(payload.kind, 'family_attendance')
  assert.equal(payload.status, 'absent')
  assert.equal(payload.studentId, school.student)
  assert.equal(payload.attendanceId, marked.body.attendance.id)
  assert.equal(payload.correction, false)
  assert.match(payload.message, /absent/)
  assert.deepEqual(Object.keys(payload.translations.message).sort(), ['ar', 'en', 'ru', 'uz'])
  assert.equal(payload.access_level, 'family')
  assert.ok(Number.isInteger(meta.id))

  // Marking the same status again tells no one anything new; a correction sends a correction.
  await h.realtimeApi(server, h.users.a.teacher, 'POST', 'attendance/mark', {
    groupId: school.group,
    studentId: school.student,
    status: 'absent',
    notes: 'still absent',
  })
  const corrected = await h.realtimeApi(server, h.users.a.teacher, 'POST', 'attendance/mark', {
    groupId: school.group,
    studentId: school.student,
    status: 'present',
  })
  assert.equal(corrected.status, 200, JSON.stringify(corrected.body))
  await waitFor(() => parentNotices.length >= 2, { what: 'the correction' })
  await sleep(QUIET_MS)
  assert.deepEqual(
    parentNotices.map((n) => [n.payload.kind, n.payload.status]),
    [
      ['family_attendance', 'absent'],
      ['family_attendance_correction', 'present'],
    ],
  )
  assert.deepEqual(studentNotices, []) // a notice reaches only its recipient
})

test("an admin's emergency alert reaches a student, a teacher and a parent during a prayer hold", async () => {
  const school = h.schools.a
  const window = JSON.parse(h.python('prayer_now.py', [school.org]))
  assert.ok(Date.parse(window.windowEndsAt) > Date.now(), JSON.stringify(window))

  const events = ['emergency_alert', 'system_announcement']
  const student = await joinNotifications('student', h.users.a.student, events)
  const teacher = await joinNotifications('teacher', h.users.a.teacher, events)
  const parent = await joinNotifications('parent', h.users.a.parent, events)

  const announce = (body) => h.realtimeApi(server, h.users.a.admin, 'POST', 'announcements', body)
  const held = await announce({ type: 'system_announcement', title: 'Open day', message: 'Saturday', audience: 'all' })
  assert.equal(held.status, 201, JSON.stringify(held.body))
  const alert = await announce({
    type: 'emergency_alert',
    title: { en: 'Evacuate', ru: 'Эвакуация' },
    message: 'Leave by the east exit',
    audience: 'all',
  })
  assert.equal(alert.status, 201, JSON.stringify(alert.body))

  for (const [who, received] of Object.entries({ student, teacher, parent })) {
    await waitFor(() => received.some((m) => m.event === 'emergency_alert'), { what: `the alert at the ${who}` })
    const message = received.find((m) => m.event === 'emergency_alert')
    assert.equal(message.payload.title, 'Evacuate')
    assert.equal(message.payload.message, 'Leave by the east exit')
    assert.equal(message.payload.announcementId, alert.body.announcement.id)
  }
  await sleep(QUIET_MS)
  for (const received of [student, teacher, parent]) {
    assert.deepEqual(
      received.map((m) => m.event),
      ['emergency_alert'],
      'the plain announcement waits for the prayer window to end',
    )
  }

  const summary = await h.realtimeApi(server, h.users.a.admin, 'GET', `announcements/${alert.body.announcement.id}`)
  assert.equal(summary.status, 200)
  const { delivery } = summary.body.announcement
  assert.equal(delivery.recipients, alert.body.announcement.delivery.recipients)
  assert.ok(delivery.live >= 3, JSON.stringify(delivery)) // the three sockets took it
})
