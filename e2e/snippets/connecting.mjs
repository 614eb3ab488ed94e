import { RealtimeClient } from '@supabase/realtime-js' // or supabase-js's client.realtime
import WebSocket from 'ws'

const HOST = process.env.HOST // e.g. rt.example.uz behind TLS: https:// and wss://
const api = async (path, options = {}) => {
  const response = await fetch(`http://${HOST}${path}`, {
    ...options,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${jwt}`, ...options.headers },
  })
  return response.json()
}
const login = () => api('/api/auth/token', {
  method: 'POST', body: JSON.stringify({ username: process.env.LOGIN, password: process.env.PASSWORD }),
})

let jwt = ''
jwt = (await login()).access // POST /api/auth/token
const client = new RealtimeClient(`ws://${HOST}/realtime/v1`, {
  params: { apikey: jwt }, // or REALTIME_API_KEY when configured
  transport: WebSocket, // Node 20 has no global WebSocket; browsers and React Native need none
})
client.setAuth(jwt) // sent as access_token; call again after a refresh

const me = await api('/api/me') // also lists the user's `topics`
const org = me.organization.id, group = me.groups[0].id
const channel = client.channel(`attendance:org_${org}:group_${group}`, {
  config: {
    private: true, // realtime-js sends `replay` for private channels only
    presence: { key: me.id },
    broadcast: { self: false, ack: true, replay: { since: Date.now() - 3600_000, limit: 100 } },
  },
})
channel
  .on('broadcast', { event: 'attendance_sync' }, async ({ payload, meta }) => {
    console.log('attendance_sync', meta.id, payload.status)
    // Acknowledge events (marks them delivered; see below):
    const reply = await channel.send({ type: 'delivery_ack', ids: [meta.id] })
    console.log('delivery_ack', reply)
  })
  .on('postgres_changes',
      { event: 'UPDATE', schema: 'public', table: 'attendance', filter: `group_id=eq.${group}` },
      (change) => console.log('postgres_changes', change.new.status, change.old.status))
  .on('presence', { event: 'sync' }, () => console.log('presence', Object.keys(channel.presenceState()).length))
  .subscribe(async (status) => {
    console.log(status)
    if (status === 'SUBSCRIBED') await channel.track({ screen: 'attendance' })
  })
