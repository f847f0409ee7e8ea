// The plugin against an emulated pool of three hosts whose array answers
// probes with the driver's own results for a subsystem of three namespaces
// (empty, an nvmetcp SR from another pool, a file system): the file the
// wizard walk uses, xo/xo-web-nvmetcp/probe-fixture.json.

import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'

import plugin from '../src/index.mjs'
import { emulatedPool, root, srByUuid } from './support/pool.mjs'
import { XoStandIn } from './support/xo-stand-in.mjs'

const NQN = 'nqn.2010-06.com.example:array1'
const OLD_SR = '4c8f2d1a-7b3e-4f6a-9d2c-1e5b8a7f3c90'
const portals = ['10.0.1.10', '10.0.2.10']

describe('xo-server-nvmetcp against an array with three namespaces', () => {
  let pool, xo, host

  before(async () => {
    pool = await emulatedPool({ hosts: 3, probeFixture: join(root, 'xo/xo-web-nvmetcp/probe-fixture.json') })
    xo = new XoStandIn(pool.xapi)
    plugin({ xo }).load()
    host = pool.master.uuid
  })
  after(async () => {
    await pool?.close()
  })

  it('lists the subsystem behind the portals, then its namespaces with what each holds', async () => {
    const listed = await xo.call('nvmetcp.probe', { host, portals })
    assert.deepEqual(listed.subsystems.map(s => s.nqn), [NQN])
    assert.ok(listed.subsystems[0].namespaces.every(n => !n.inspected && n.holds === undefined && n.sr === null))

    const [subsystem] = (await xo.call('nvmetcp.probe', { host, portals, nqn: NQN })).subsystems
    assert.deepEqual(
      subsystem.namespaces.map(n => [n.nsid, n.size, n.paths, n.holds]),
      [
        [1, 2 ** 41, '2/2 paths live', 'nothing: empty'],
        [2, 2 ** 40, '2/2 paths live', 'nvmetcp SR "old array"'],
        [3, 500 * 2 ** 30, '2/2 paths live', 'an ext4 file system'],
      ]
    )
    assert.deepEqual(subsystem.namespaces[1].sr, {
      uuid: OLD_SR,
      nameLabel: 'old array',
      nameDescription: 'from the previous pool',
      size: 2 ** 40,
      freeSpace: 800 * 2 ** 30,
      health: 'healthy',
      inPool: false,
    })
  })

  it('reattaches the SR found there with a PBD plugged on every host', async () => {
    const back = await xo.call('nvmetcp.reattach', { host, srUuid: OLD_SR, portals, nqn: NQN })
    assert.equal(back.uuid, OLD_SR)
    assert.equal(back.hosts.length, 3)
    assert.ok(back.hosts.every(h => h.attached), JSON.stringify(back.hosts))
    const { sr, pbds } = await srByUuid(pool.xapi, OLD_SR)
    assert.equal(sr.name_label, 'old array', 'the SR keeps its own name when none is given')
    assert.equal(sr.type, 'nvmetcp')
    assert.equal(sr.shared, true)
    assert.equal(sr.other_config['auto-scan'], 'true')
    assert.equal(Number(sr.physical_size), 2 ** 40, 'scanned: the size the SR reports')
    assert.equal(back.size, 2 ** 40)
    assert.equal(new Set(pbds.map(p => p.host)).size, 3)
    for (const pbd of pbds) {
      assert.equal(pbd.currently_attached, true)
      assert.equal(pbd.device_config.sr_uuid, OLD_SR, "the probe's device-config, naming the SR")
      assert.equal(pbd.device_config.namespace, 'uuid.0b7d3e91-5c2f-4a10-9e6b-7f3a1c8d2e02')
    }
    const [subsystem] = (await xo.call('nvmetcp.probe', { host, portals, nqn: NQN })).subsystems
    assert.equal(subsystem.namespaces[1].sr.inPool, true, 'probe now shows it in use')
  })

  it('creates on the empty namespace, scanned to its size', async () => {
    const created = await xo.call('nvmetcp.create', {
      host,
      nameLabel: 'new',
      portals,
      nqn: NQN,
      namespace: 'uuid.6f1c2a44-9a3e-4b8e-8c55-0d2f9b1e7a01',
    })
    assert.equal(created.size, 2 ** 41)
    assert.deepEqual(created.warnings, [])
  })

  it('names a reattached SR as asked', async () => {
    const srRef = await pool.xapi.call('SR.get_by_uuid', OLD_SR)
    for (const pbd of await pool.xapi.call('SR.get_PBDs', srRef)) {
      await pool.xapi.call('PBD.unplug', pbd)
    }
    await pool.xapi.call('SR.forget', srRef)
    await xo.call('nvmetcp.reattach', { host, srUuid: OLD_SR, nameLabel: 'renamed', portals, nqn: NQN })
    assert.equal((await srByUuid(pool.xapi, OLD_SR)).sr.name_label, 'renamed')
  })
})
