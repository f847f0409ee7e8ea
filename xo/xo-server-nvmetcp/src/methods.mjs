// The API methods `nvmetcp.probe`, `nvmetcp.create` and `nvmetcp.reattach`.
//
// Declared as XO declares its own SR methods (packages/xo-server/src/api/sr.mjs,
// e.g. `createIscsi`, `probeIscsiIqns`): `params` is a JSON schema whose
// properties take XO's `optional` flag, and `resolve` turns the `host` id
// into the host object, refusing users without `administrate` on it
// (packages/xo-server/src/xo-mixins/api.mjs `resolveParams`). Every call
// goes through the host's pool connection (`xo.getXapi(host)`), with the
// calls of the `xen-api` client only.

import { createConfig, probeConfig, SR_TYPE } from './device-config.mjs'
import { fromXapi, NvmetcpError } from './errors.mjs'
import { forget, outcomesOf, plugEverywhere, scan, setAutoScan } from './pool.mjs'
import { probeExt, subsystemsOf } from './probe.mjs'

const endpointList = { type: 'array', items: { type: 'string' }, optional: true }

const target = {
  portals: {
    ...endpointList,
    description: 'I/O portals, each address[:port] (port 4420 by default, IPv6 in brackets)',
  },
  discovery: {
    ...endpointList,
    description: 'discovery endpoints, each address[:port] (port 8009 by default)',
  },
  transport: { enum: ['tcp', 'rdma'], optional: true, description: 'tcp (default) or rdma' },
}

const resolveHost = { host: ['host', 'host', 'administrate'] }

async function srUuidsIn(xapi) {
  return new Set(Object.values(await xapi.call('SR.get_all_records')).map(sr => sr.uuid))
}

async function summary(xapi, srRef, hosts, warnings) {
  const sr = await xapi.call('SR.get_record', srRef)
  return {
    id: sr.uuid,
    uuid: sr.uuid,
    nameLabel: sr.name_label,
    size: Number(sr.physical_size),
    vdis: sr.VDIs.length,
    hosts,
    warnings,
  }
}

export function methods(xo) {
  async function probe({ host, portals, discovery, transport, nqn }) {
    const config = probeConfig({ portals, discovery, transport, nqn })
    const xapi = xo.getXapi(host)
    const results = await probeExt(xapi, host, config)
    return { subsystems: subsystemsOf(results, await srUuidsIn(xapi)) }
  }
  probe.description = 'the NVMe subsystems at these endpoints, their namespaces, what each holds, and the nvmetcp SRs on them'
  probe.params = {
    host: { type: 'string' },
    ...target,
    nqn: { type: 'string', optional: true, description: 'the subsystem; without it, discovery lists every subsystem' },
  }
  probe.resolve = resolveHost

  async function create({ host, nameLabel, nameDescription = '', portals, discovery, transport, nqn, namespace, force }) {
    const deviceConfig = createConfig({ portals, discovery, transport, nqn, namespace, force })
    const xapi = xo.getXapi(host)
    let srRef
    try {
      // As XO's SR_create (@xen-orchestra/xapi/sr.mjs): a shared SR, so xapi
      // runs the driver's SR.create on the master and makes a PBD per host.
      srRef = await xapi.call(
        'SR.create',
        host._xapiRef,
        deviceConfig,
        0,
        nameLabel,
        nameDescription,
        SR_TYPE,
        'user',
        true,
        {}
      )
    } catch (error) {
      throw fromXapi(error, { host: host.id })
    }
    const warnings = []
    await setAutoScan(xapi, srRef, warnings)
    const hosts = await outcomesOf(xapi, srRef)
    await scan(xapi, srRef, warnings)
    return summary(xapi, srRef, hosts, warnings)
  }
  create.description = 'create a shared nvmetcp SR on a namespace, with a PBD plugged on every host of the pool'
  create.params = {
    host: { type: 'string' },
    nameLabel: { type: 'string' },
    nameDescription: { type: 'string', minLength: 0, optional: true },
    ...target,
    nqn: { type: 'string' },
    namespace: { type: 'string', description: 'the stable identifier nvmetcp.probe reports, or an NSID' },
    force: { type: 'boolean', optional: true, description: 'take a namespace that holds data or a signature' },
  }
  create.resolve = resolveHost

  async function reattach({ host, srUuid, nameLabel, nameDescription, portals, discovery, transport, nqn }) {
    const xapi = xo.getXapi(host)
    if ((await srUuidsIn(xapi)).has(srUuid)) {
      throw fromXapi({ code: 'SR_UUID_EXISTS', params: [srUuid] })
    }
    const config = probeConfig({ portals, discovery, transport, nqn })
    const found = (await probeExt(xapi, host, config)).find(result => result.sr?.uuid === srUuid)
    if (found === undefined) {
      throw new NvmetcpError(
        'NVMETCP_SR_NOT_FOUND',
        `no namespace of ${nqn} at these endpoints holds the nvmetcp SR ${srUuid}: probe them to see what each namespace holds`,
        { srUuid }
      )
    }
    let srRef
    try {
      // As XO's reattachSr (packages/xo-server/src/xapi/mixins/storage.mjs):
      // the record first, then a PBD per host with the device-config the
      // probe found (it names the namespace by identity and the SR's UUID).
      srRef = await xapi.call(
        'SR.introduce',
        srUuid,
        nameLabel ?? found.sr.name_label,
        nameDescription ?? found.sr.name_description ?? '',
        SR_TYPE,
        'user',
        true,
        {}
      )
    } catch (error) {
      throw fromXapi(error, { host: host.id })
    }
    const hosts = await plugEverywhere(xapi, srRef, found.configuration)
    if (!hosts.some(outcome => outcome.attached)) {
      await forget(xapi, srRef).catch(() => {})
      const { code, sentence } = hosts[0]?.error ?? { code: 'NVMETCP_NO_PATH', sentence: 'no host attached the SR' }
      throw new NvmetcpError(code, sentence, { srUuid, hosts })
    }
    const warnings = []
    await setAutoScan(xapi, srRef, warnings)
    await scan(xapi, srRef, warnings)
    return summary(xapi, srRef, hosts, warnings)
  }
  reattach.description = 'bring back an nvmetcp SR that nvmetcp.probe found on a namespace, with a PBD plugged on every host'
  reattach.params = {
    host: { type: 'string' },
    srUuid: { type: 'string' },
    nameLabel: { type: 'string', optional: true },
    nameDescription: { type: 'string', minLength: 0, optional: true },
    ...target,
    nqn: { type: 'string' },
  }
  reattach.resolve = resolveHost

  return { nvmetcp: { probe, create, reattach } }
}
