// The plugin as xo-server runs it, against an emulated pool of three hosts
// whose storage accepts everything: how its methods are declared, what
// create and reattach do to the pool, who may call them, and the errors a
// client receives.

import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'

import plugin from '../src/index.mjs'
import { emulatedPool, srByUuid } from './support/pool.mjs'
import { XoStandIn } from './support/xo-stand-in.mjs'

const NQN = 'nqn.2014-08.org.example:array'

// Rejects with the plugin error `code`, whose data has the given members.
const rejectsWith = (promise, code, members = {}) =>
  assert.rejects(promise, error => {
    assert.equal(error.code, -32000, error.message)
    assert.equal(error.data?.code, code, error.message)
    for (const [key, value] of Object.entries(members)) {
      if (value instanceof RegExp) {
        assert.match(error.data[key], value)
      } else {
        assert.deepEqual(error.data[key], value, key)
      }
    }
    return true
  })
const target = { portals: ['192.0.2.20', '192.0.2.21:4421'], nqn: NQN }

describe('xo-server-nvmetcp against the emulated pool', () => {
  let pool, xo, instance

  before(async () => {
    pool = await emulatedPool({ hosts: 3 })
    xo = new XoStandIn(pool.xapi)
    instance = plugin({ xo, staticConfig: {}, getDataDir: async () => '/nonexistent' })
    instance.load()
  })
  after(async () => {
    instance?.unload()
    await pool?.close()
  })

  it('declares its methods as XO declares its own SR methods', () => {
    for (const name of ['nvmetcp.probe', 'nvmetcp.create', 'nvmetcp.reattach']) {
      const method = xo.method(name)
      assert.equal(typeof method, 'function', name)
      assert.deepEqual(method.params.host, { type: 'string' }, `${name}: host param`)
      assert.deepEqual(method.resolve, { host: ['host', 'host', 'administrate'] }, `${name}: resolve`)
      assert.equal(method.permission, undefined, `${name}: permission comes from the host, as createIscsi`)
      assert.equal(typeof method.description, 'string')
    }
    assert.deepEqual(xo.method('nvmetcp.create').params.nameDescription, { type: 'string', minLength: 0, optional: true })
  })

  it('creates a shared SR with a PBD plugged on every host and auto-scan as XO sets it', async () => {
    const created = await xo.call('nvmetcp.create', {
      host: pool.master.uuid,
      nameLabel: 'array ✓',
      nameDescription: '  from XO  ',
      ...target,
      namespace: '1',
    })
    assert.equal(created.hosts.length, 3)
    assert.ok(created.hosts.every(h => h.attached && h.error === undefined), JSON.stringify(created.hosts))
    assert.equal(created.hosts[0].host, pool.master.uuid, 'the master comes first')
    const { sr, pbds } = await srByUuid(pool.xapi, created.uuid)
    assert.equal(sr.type, 'nvmetcp')
    assert.equal(sr.shared, true)
    assert.equal(sr.content_type, 'user')
    assert.equal(sr.name_label, 'array ✓')
    assert.equal(sr.name_description, '  from XO  ')
    assert.equal(sr.other_config['auto-scan'], 'true')
    const hosts = Object.values(await pool.xapi.call('host.get_all_records'))
    assert.equal(pbds.length, hosts.length)
    assert.equal(new Set(pbds.map(p => p.host)).size, hosts.length, 'one PBD per host')
    for (const pbd of pbds) {
      assert.equal(pbd.currently_attached, true)
      assert.deepEqual(pbd.device_config, {
        portals: '192.0.2.20,192.0.2.21:4421',
        nqn: NQN,
        namespace: '1',
      })
    }
  })

  it('passes force and discovery endpoints to the driver only when given', async () => {
    const created = await xo.call('nvmetcp.create', {
      host: pool.master.uuid,
      nameLabel: 'forced',
      discovery: ['192.0.2.30'],
      nqn: NQN,
      namespace: 'uuid.3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11',
      force: true,
      transport: 'rdma',
    })
    const { pbds } = await srByUuid(pool.xapi, created.uuid)
    assert.deepEqual(pbds[0].device_config, {
      discovery: '192.0.2.30',
      nqn: NQN,
      namespace: 'uuid.3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11',
      force: 'true',
      transport: 'rdma',
    })
  })

  it('asks for administrate on the host, as XO does for its own SR methods', async () => {
    const user = { id: 'operator', permission: 'none' }
    await assert.rejects(xo.call('nvmetcp.probe', { host: pool.master.uuid, ...target }, user), { code: 2 })
    xo.grant('operator', pool.master.uuid, 'operate')
    await assert.rejects(xo.call('nvmetcp.probe', { host: pool.master.uuid, ...target }, user), { code: 2 })
    xo.grant('operator', pool.master.uuid, 'administrate')
    assert.deepEqual(await xo.call('nvmetcp.probe', { host: pool.master.uuid, ...target }, user), { subsystems: [] })
    await assert.rejects(xo.call('nvmetcp.probe', { host: 'no-such-host', ...target }), { code: 1 })
  })

  it('names the field of bad input, with the plugin code, to non-admin users too', async () => {
    const user = { id: 'operator', permission: 'none' }
    xo.grant('operator', pool.master.uuid, 'administrate')
    await assert.rejects(xo.call('nvmetcp.probe', { host: pool.master.uuid, nqn: NQN }, user), error => {
      assert.equal(error.code, -32000)
      assert.equal(error.data.code, 'NVMETCP_INVALID_CONFIG')
      assert.equal(error.data.field, 'portals')
      assert.match(error.message, /^NVMETCP_INVALID_CONFIG: portals: give the I\/O portals/)
      return true
    })
    await rejectsWith(
      xo.call('nvmetcp.probe', { host: pool.master.uuid, portals: ['192.0.2.20,192.0.2.21'] }, user),
      'NVMETCP_INVALID_CONFIG',
      { field: 'portals', sentence: /is not one address\[:port\]/ }
    )
    await rejectsWith(
      xo.call('nvmetcp.create', { host: pool.master.uuid, nameLabel: 'x', ...target, namespace: ' ' }, user),
      'NVMETCP_INVALID_CONFIG',
      { field: 'namespace' }
    )
    await assert.rejects(xo.call('nvmetcp.create', { host: pool.master.uuid, nameLabel: 'x', ...target }), {
      code: 10,
    })
  })

  it('refuses to reattach an SR that is already in the pool', async () => {
    const created = await xo.call('nvmetcp.create', { host: pool.master.uuid, nameLabel: 'here', ...target, namespace: '2' })
    await rejectsWith(xo.call('nvmetcp.reattach', { host: pool.master.uuid, srUuid: created.uuid, ...target }), 'SR_UUID_EXISTS', {
      sentence: `the SR ${created.uuid} is already in this pool: it needs no reattach`,
    })
  })

  it('says so when the storage does not show the SR to reattach', async () => {
    const srUuid = '0b6c6f7e-1111-4222-8333-944455556666'
    await rejectsWith(xo.call('nvmetcp.reattach', { host: pool.master.uuid, srUuid, ...target }), 'NVMETCP_SR_NOT_FOUND', {
      srUuid,
      sentence: /probe them to see what each namespace holds/,
    })
    const uuids = Object.values(await pool.xapi.call('SR.get_all_records')).map(sr => sr.uuid)
    assert.ok(!uuids.includes(srUuid), 'nothing was introduced')
  })

  it('removes its methods when unloaded', () => {
    instance.unload()
    assert.equal(xo.method('nvmetcp.probe'), undefined)
    instance.load()
    assert.equal(typeof xo.method('nvmetcp.probe'), 'function')
  })
})
