// The pure parts: device-config from the wizard's fields, XAPI and driver
// errors as XO users see them, probe results grouped by subsystem.

import assert from 'node:assert/strict'
import { describe, it } from 'node:test'

import { createConfig, probeConfig } from '../src/device-config.mjs'
import { fromXapi, JSON_RPC_CODE, NvmetcpError } from '../src/errors.mjs'
import { subsystemsOf } from '../src/probe.mjs'

describe('device-config', () => {
  it('joins endpoints and leaves out what was not given', () => {
    assert.deepEqual(probeConfig({ portals: [' 10.0.0.1 ', '', '[fd00::1]:4421'], nqn: 'n' }), {
      portals: '10.0.0.1,[fd00::1]:4421',
      nqn: 'n',
    })
    assert.deepEqual(probeConfig({ discovery: '10.0.0.9', transport: 'tcp' }), { discovery: '10.0.0.9' })
    assert.deepEqual(createConfig({ portals: ['a'], nqn: ' n ', namespace: 3, force: false }), {
      portals: 'a',
      nqn: 'n',
      namespace: '3',
    })
  })
  it('lists subsystems through the portals themselves when neither NQN nor discovery is given', () => {
    assert.deepEqual(probeConfig({ portals: ['10.0.0.1', 'array.example:4421', 'fd00::1', '[fd00::2]', '[fd00::3]:4430'] }), {
      portals: '10.0.0.1,array.example:4421,fd00::1,[fd00::2],[fd00::3]:4430',
      discovery: '10.0.0.1:4420,array.example:4421,[fd00::1]:4420,[fd00::2]:4420,[fd00::3]:4430',
    })
  })
  it('refuses what the driver could not read, naming the field', () => {
    assert.throws(() => probeConfig({ portals: [], discovery: [' '] }), { code: 'NVMETCP_INVALID_CONFIG', data: { field: 'portals' } })
    assert.throws(() => probeConfig({ portals: ['10.0.0.1 10.0.0.2'] }), { data: { field: 'portals' } })
    assert.throws(() => createConfig({ portals: ['a'], namespace: '1' }), { data: { field: 'nqn' } })
  })
})

describe('errors', () => {
  it('keeps the driver code and its sentence', () => {
    const error = fromXapi({ code: 'NVMETCP_NO_PATH', params: ['no path to nqn.x could be connected', 'detail'] }, { host: 'h' })
    assert.ok(error instanceof NvmetcpError)
    assert.deepEqual(error.toJsonRpcError(), {
      code: JSON_RPC_CODE,
      message: 'NVMETCP_NO_PATH: no path to nqn.x could be connected',
      data: { code: 'NVMETCP_NO_PATH', sentence: 'no path to nqn.x could be connected', params: ['detail'], host: 'h' },
    })
  })
  it('reads the driver code in its SMAPIv1 spelling too', () => {
    assert.equal(fromXapi({ code: 'SR_BACKEND_FAILURE_NVMETCP_NAMESPACE', params: ['gone'] }).code, 'NVMETCP_NAMESPACE')
  })
  it('says what XAPI codes mean for this SR type', () => {
    assert.match(fromXapi({ code: 'SR_UNKNOWN_DRIVER', params: ['nvmetcp'] }).sentence, /install the nvmetcp RPM on every host/)
    assert.equal(fromXapi({ code: 'SR_HAS_PBD', params: ['OpaqueRef:x'] }).message, 'SR_HAS_PBD: OpaqueRef:x')
    const plain = new TypeError('boom')
    assert.equal(fromXapi(plain), plain)
  })
})

describe('probe results', () => {
  it('group by subsystem, sorted by NSID, with what each namespace holds', () => {
    const results = [
      {
        configuration: { nqn: 'nqn.b', namespace: 'uuid.2' },
        complete: true,
        extra_info: { nsid: '2', size: '1048576', paths: '2/2 paths live', holds: 'nothing: empty' },
      },
      {
        configuration: { nqn: 'nqn.b', namespace: 'uuid.1', sr_uuid: 'u1' },
        complete: true,
        sr: { uuid: 'u1', name_label: 'old', name_description: '', total_space: '100', free_space: '40', health: 'healthy' },
        extra_info: { nsid: '1', size: '2097152', paths: '2/2 paths live' },
      },
      { configuration: { nqn: 'nqn.a', namespace: 'uuid.9' }, complete: false, extra_info: { nsid: '9', size: '5' } },
    ]
    const [b, a] = subsystemsOf(results, new Set(['u1']))
    assert.equal(b.nqn, 'nqn.b')
    assert.deepEqual(b.namespaces.map(n => n.nsid), [1, 2])
    assert.deepEqual(b.namespaces[0].sr, {
      uuid: 'u1', nameLabel: 'old', nameDescription: '', size: 100, freeSpace: 40, health: 'healthy', inPool: true,
    })
    assert.equal(b.namespaces[0].holds, 'nvmetcp SR "old"')
    assert.equal(b.namespaces[1].holds, 'nothing: empty')
    assert.equal(b.namespaces[1].size, 1048576)
    assert.equal(a.namespaces[0].inspected, false)
    assert.equal(a.namespaces[0].holds, undefined)
  })
})
