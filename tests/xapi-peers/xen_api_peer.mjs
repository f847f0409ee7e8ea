// Xen Orchestra's `xen-api` connector against the XAPI emulator: log in, list
// SM records, create a shared nvmetcp SR and read it back, with the given
// transport (auto, json-rpc or xml-rpc). Prints one "ok: …" line per check;
// any failure exits non-zero with the reason.
import { createClient } from 'xen-api'

const [url, transport] = process.argv.slice(2)
const fail = message => {
  console.error(`xen-api (${transport}): ${message}`)
  process.exit(1)
}
const check = (condition, what) => {
  if (!condition) fail(what)
  console.log(`ok: ${what}`)
}

const xapi = createClient({
  url,
  auth: { user: 'root', password: 'xenroot' },
  transport,
  allowUnauthorized: false,
  watchEvents: ['SR', 'PBD', 'task'],
})
try {
  await xapi.connect()
  check(xapi.status === 'connected', 'connected and logged in')
  const sms = await xapi.call('SM.get_all_records')
  check(Object.values(sms).some(sm => sm.type === 'nvmetcp'), 'SM records list nvmetcp')
  const pool = Object.values(await xapi.call('pool.get_all_records'))[0]
  const hosts = await xapi.call('host.get_all_records')
  const deviceConfig = { portals: '192.0.2.20,192.0.2.21', nqn: 'nqn.2014-08.org.example:array', dhchap_password: 'DHHC-1:00:c2VjcmV0:' }
  const srRef = await xapi.call('SR.create', pool.master, deviceConfig, 0, 'xen-api SR', '  spaced  ', 'nvmetcp', 'user', true, {})
  check(typeof srRef === 'string' && srRef.startsWith('OpaqueRef:'), 'SR.create returned an SR ref')
  const sr = await xapi.call('SR.get_record', srRef)
  check(sr.type === 'nvmetcp' && sr.shared === true, 'the SR is a shared nvmetcp SR')
  check(sr.name_description === '  spaced  ', 'strings keep their spaces')
  check(sr.PBDs.length === Object.keys(hosts).length, 'one PBD per host')
  for (const pbdRef of sr.PBDs) {
    const pbd = await xapi.call('PBD.get_record', pbdRef)
    check(pbd.currently_attached === true, `PBD ${pbd.uuid} is plugged`)
    check(!('dhchap_password' in pbd.device_config) && 'dhchap_password_secret' in pbd.device_config, `PBD ${pbd.uuid} holds the key as a secret`)
  }
  // The connector's object cache, fed by event.from, sees the new SR.
  let cached
  for (let i = 0; i < 100 && cached === undefined; i++) {
    cached = xapi.getObjectByRef(srRef, undefined)
    if (cached === undefined) await new Promise(resolve => setTimeout(resolve, 100))
  }
  check(cached !== undefined && cached.$type === 'SR' && cached.name_label === 'xen-api SR', 'the event-fed cache holds the SR')
  // An async call: the connector follows the task through events and
  // decodes its XML-RPC result fragment.
  const scanned = await xapi.callAsync('SR.scan', srRef)
  check(scanned === '', 'Async.SR.scan finished through its task')
  const created = await xapi.callAsync('secret.create', { value: 's3cret', other_config: {} })
  check(typeof created === 'string' && created.startsWith('OpaqueRef:'), 'an async result ref decoded from task.result')
  await xapi.disconnect()
  check(true, 'disconnected')
} catch (error) {
  fail(error && error.stack ? error.stack : String(error))
}
