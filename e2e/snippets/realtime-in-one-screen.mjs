import { RealtimeClient } from '@supabase/realtime-js'
import WebSocket from 'ws' // Node 20 has no global WebSocket; browsers and React Native need no transport

const { HOST, ACCESS_JWT: accessJwt, ORG_ID: orgId, GROUP_ID: groupId, USER_ID: userId } = process.env
const client = new RealtimeClient(`ws://${HOST}/realtime/v1`, { params: { apikey: accessJwt }, transport: WebSocket })
client.setAuth(accessJwt)
client.channel(`attendance:org_${orgId}:group_${groupId}`, {
    config: { private: true, // realtime-js sends the replay settings of private channels only
              presence: { key: userId },
              broadcast: { self: false, ack: true, replay: { since: Date.now() - 3600_000, limit: 100 } } },
  })
  .on('broadcast', { event: 'attendance_sync' }, ({ payload, meta }) => console.log('attendance_sync', meta.id))
  .on('postgres_changes', { event: '*', schema: 'public', table: 'attendance', filter: `group_id=eq.${groupId}` },
      (change) => console.log('postgres_changes', change.eventType, change.new.status))
  .subscribe((status) => console.log(status))
