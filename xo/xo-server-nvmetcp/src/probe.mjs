// SR.probe_ext answers, grouped as the wizard shows them: subsystem, then
// namespace, with what each namespace holds.
//
// XO's own probes use the legacy SR.probe, which for SMAPIv3 drivers keeps
// only the results that carry an SR (xapi-project/xen-api
// ocaml/xapi/xapi_sr.ml `probe`): a namespace that holds no SR yet would be
// lost. SR.probe_ext returns every `probe_result` {configuration, complete,
// sr?, extra_info} (same file, `probe_ext`).

import { SR_TYPE } from './device-config.mjs'
import { fromXapi } from './errors.mjs'

export async function probeExt(xapi, host, config) {
  try {
    return await xapi.call('SR.probe_ext', host._xapiRef, config, SR_TYPE, {})
  } catch (error) {
    throw fromXapi(error, { host: host.id })
  }
}

const number = value => (value === undefined || value === '' ? undefined : Number(value))

// One namespace: the driver's extra_info (sm-driver/src/sr/probe.rs
// `probe_subsystem`: nsid, size, paths, holds) and the SR on it, if any.
function namespaceOf(result, srUuidsInPool) {
  const info = result.extra_info ?? {}
  const configuration = result.configuration ?? {}
  const sr = result.sr
  return {
    namespace: configuration.namespace,
    nsid: number(info.nsid),
    size: number(info.size),
    paths: info.paths,
    // `complete` is false when the subsystem was only listed (discovery
    // without an NQN): what the namespace holds was not inspected.
    inspected: Boolean(result.complete),
    holds: sr === undefined ? info.holds : `nvmetcp SR "${sr.name_label}"`,
    sr:
      sr === undefined
        ? null
        : {
            uuid: sr.uuid,
            nameLabel: sr.name_label,
            nameDescription: sr.name_description,
            size: number(sr.total_space),
            freeSpace: number(sr.free_space),
            health: sr.health,
            inPool: sr.uuid !== undefined && srUuidsInPool.has(sr.uuid),
          },
    configuration,
  }
}

export function subsystemsOf(results, srUuidsInPool = new Set()) {
  const byNqn = new Map()
  for (const result of results) {
    const nqn = result.configuration?.nqn ?? ''
    if (!byNqn.has(nqn)) {
      byNqn.set(nqn, [])
    }
    byNqn.get(nqn).push(namespaceOf(result, srUuidsInPool))
  }
  return Array.from(byNqn, ([nqn, namespaces]) => ({
    nqn,
    namespaces: namespaces.sort((a, b) => (a.nsid ?? 0) - (b.nsid ?? 0)),
  }))
}
