// The pool side of create and reattach: PBDs host by host, their outcome,
// the auto-scan flag and the first scan.

import { fromXapi } from './errors.mjs'

// Every host of the pool, master first (the master writes the SR's
// metadata; its PBD is the one xapi scans through).
export async function hostsMasterFirst(xapi) {
  const [pool] = Object.values(await xapi.call('pool.get_all_records'))
  const hosts = Object.entries(await xapi.call('host.get_all_records')).map(([ref, host]) => ({ ref, ...host }))
  return hosts.sort((a, b) => (b.ref === pool.master) - (a.ref === pool.master))
}

const outcome = (host, error) => {
  const base = { host: host.uuid, hostName: host.name_label, attached: error === undefined }
  if (error === undefined) {
    return base
  }
  const { code, sentence } = fromXapi(error)
  return { ...base, error: { code: code ?? 'UNKNOWN', sentence: sentence ?? String(error?.message ?? error) } }
}

// A shared SR.create makes and plugs a PBD per host, but a PBD that fails
// to plug only leaves a line in xapi's log: each unplugged PBD is plugged
// again here to learn its host's reason.
export async function outcomesOf(xapi, srRef) {
  const hosts = new Map((await hostsMasterFirst(xapi)).map((host, i) => [host.ref, { ...host, order: i }]))
  const pbdRefs = await xapi.call('SR.get_PBDs', srRef)
  const pbds = await Promise.all(pbdRefs.map(async ref => ({ ref, ...(await xapi.call('PBD.get_record', ref)) })))
  pbds.sort((a, b) => (hosts.get(a.host)?.order ?? 0) - (hosts.get(b.host)?.order ?? 0))
  const outcomes = []
  for (const pbd of pbds) {
    const host = hosts.get(pbd.host) ?? { uuid: pbd.host, name_label: pbd.host }
    if (pbd.currently_attached) {
      outcomes.push(outcome(host))
      continue
    }
    try {
      await xapi.call('PBD.plug', pbd.ref)
      outcomes.push(outcome(host))
    } catch (error) {
      outcomes.push(outcome(host, error))
    }
  }
  return outcomes
}

// A PBD on every host for an introduced SR, each plugged; a host that fails
// keeps its PBD unplugged (it can be plugged later from XO's SR page).
export async function plugEverywhere(xapi, srRef, deviceConfig) {
  const outcomes = []
  for (const host of await hostsMasterFirst(xapi)) {
    try {
      const pbdRef = await xapi.call('PBD.create', { host: host.ref, SR: srRef, device_config: deviceConfig })
      try {
        await xapi.call('PBD.plug', pbdRef)
        outcomes.push(outcome(host))
      } catch (error) {
        outcomes.push(outcome(host, error))
      }
    } catch (error) {
      outcomes.push(outcome(host, error))
    }
  }
  return outcomes
}

// Undoes an introduce that attached nowhere: the PBDs, then the record.
export async function forget(xapi, srRef) {
  for (const pbdRef of await xapi.call('SR.get_PBDs', srRef)) {
    if (await xapi.call('PBD.get_currently_attached', pbdRef)) {
      await xapi.call('PBD.unplug', pbdRef)
    }
    await xapi.call('PBD.destroy', pbdRef)
  }
  await xapi.call('SR.forget', srRef)
}

// As XO does after each SR it creates (@xen-orchestra/xapi/sr.mjs `create`):
// xapi then scans the SR every 30 s (ocaml/xapi/xapi_sr.ml `scanning_thread`).
export async function setAutoScan(xapi, srRef, warnings) {
  try {
    await xapi.call('SR.remove_from_other_config', srRef, 'auto-scan')
    await xapi.call('SR.add_to_other_config', srRef, 'auto-scan', 'true')
  } catch (error) {
    warnings.push(`auto-scan not set: ${fromXapi(error).message}`)
  }
}

// One scan now, so the SR shows its size (XO only offers SRs whose size is
// above 0 for new disks) and its volumes at once.
export async function scan(xapi, srRef, warnings) {
  try {
    await xapi.call('SR.scan', srRef)
  } catch (error) {
    warnings.push(`first scan failed: ${fromXapi(error).message}`)
  }
}
