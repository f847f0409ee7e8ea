// From the wizard's fields to the SR's device-config (the keys are the
// driver's: sm-driver/src/device_config.rs, README "device-config keys").
//
// Only the shape is checked here (lists of non-empty entries, no commas
// inside one): the driver is the one parser of portals and NQNs, and its
// NVMETCP_INVALID_CONFIG names the key and the fix for anything else.

import { invalid } from './errors.mjs'

export const SR_TYPE = 'nvmetcp'

const endpoints = (field, value) => {
  if (value === undefined) {
    return undefined
  }
  const list = typeof value === 'string' ? value.split(',') : value
  const entries = list.map(entry => String(entry).trim()).filter(entry => entry !== '')
  if (entries.length === 0) {
    return undefined
  }
  for (const entry of entries) {
    if (/[\s,]/.test(entry)) {
      throw invalid(field, `"${entry}" is not one address[:port] (give each endpoint as its own entry)`)
    }
  }
  return entries.join(',')
}

const NVME_TCP_PORT = 4420

// A portal as a discovery endpoint: the same port, written out, since a
// discovery endpoint's default port (8009) is not an I/O portal's (4420).
const withPort = endpoint => {
  if (/^\[.*\]:\d+$/.test(endpoint) || /^[^:]+:\d+$/.test(endpoint)) {
    return endpoint
  }
  if (endpoint.startsWith('[')) {
    return `${endpoint}:${NVME_TCP_PORT}`
  }
  return endpoint.includes(':') ? `[${endpoint}]:${NVME_TCP_PORT}` : `${endpoint}:${NVME_TCP_PORT}`
}

// device-config for a probe: endpoints, and the subsystem when known. With
// I/O portals alone and no subsystem, the portals' own discovery service
// lists the subsystems (NVMe/TCP ports answer discovery too), as XO's iSCSI
// search lists the IQNs behind a portal.
export function probeConfig({ portals, discovery, nqn, transport }) {
  const config = {}
  const portalList = endpoints('portals', portals)
  const discoveryList = endpoints('discovery', discovery)
  if (portalList === undefined && discoveryList === undefined) {
    throw invalid('portals', 'give the I/O portals (address[:port], port 4420 by default) or discovery endpoints (port 8009 by default), or both')
  }
  if (portalList !== undefined) {
    config.portals = portalList
  }
  if (discoveryList !== undefined) {
    config.discovery = discoveryList
  }
  if (nqn !== undefined && nqn.trim() !== '') {
    config.nqn = nqn.trim()
  } else if (discoveryList === undefined) {
    config.discovery = portalList.split(',').map(withPort).join(',')
  }
  if (transport !== undefined && transport !== 'tcp') {
    config.transport = transport
  }
  return config
}

// device-config for SR.create: a probe's, plus the namespace (the stable
// identifier probe reports, or an NSID) and `force`.
export function createConfig({ nqn, namespace, force, ...endpointsAndTransport }) {
  if (nqn === undefined || nqn.trim() === '') {
    throw invalid('nqn', 'the subsystem NQN is required: probe the portals to list the subsystems')
  }
  if (namespace === undefined || String(namespace).trim() === '') {
    throw invalid('namespace', 'the namespace is required: probe the subsystem to list its namespaces')
  }
  const config = probeConfig({ ...endpointsAndTransport, nqn })
  config.namespace = String(namespace).trim()
  if (force) {
    config.force = 'true'
  }
  return config
}
