// The plugin against the real nvmetcp driver: run by the test bed's
// `xo-plugin` scenario (tests/testbed/tests/nvmet_sr.rs), where the XAPI
// emulator (NVMETCP_XAPI_URL) runs the real plugin binary for its storage
// calls on a guest whose kernel target serves the subsystem
// NVMETCP_XO_NQN (one 64 MiB namespace) on the portals NVMETCP_XO_PORTALS.
// Without them this file fails: it is not meant to run anywhere else.

import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'

import plugin from '../../src/index.mjs'
import { emulatedPool, srByUuid } from '../support/pool.mjs'
import { XoStandIn } from '../support/xo-stand-in.mjs'

const { NVMETCP_XAPI_URL: url, NVMETCP_XO_NQN: nqn, NVMETCP_XO_PORTALS: portalList } = process.env
const MiB = 1024 * 1024

describe('xo-server-nvmetcp on the test bed', () => {
  let pool, xo, host, portals, created, volume

  before(async () => {
    assert.ok(url && nqn && portalList, 'NVMETCP_XAPI_URL, NVMETCP_XO_NQN and NVMETCP_XO_PORTALS are required')
    portals = portalList.split(',')
    pool = await emulatedPool()
    xo = new XoStandIn(pool.xapi)
    plugin({ xo }).load()
    host = pool.master.uuid
  })
  after(async () => {
    await pool?.close()
  })

  it("probe lists the test bed's subsystem and its namespace, empty", async () => {
    const { subsystems } = await xo.call('nvmetcp.probe', { host, portals, nqn })
    assert.equal(subsystems.length, 1)
    assert.equal(subsystems[0].nqn, nqn)
    const [namespace, ...others] = subsystems[0].namespaces
    assert.equal(others.length, 0)
    assert.equal(namespace.nsid, 1)
    assert.equal(namespace.size, 64 * MiB)
    assert.equal(namespace.paths, '2/2 paths live')
    assert.equal(namespace.holds, 'nothing: empty')
    assert.equal(namespace.sr, null)
    assert.match(namespace.namespace, /^(uuid|nguid|eui)\./)
  })

  it("probe with the portals alone lists the subsystems through the portals' discovery service", async () => {
    const { subsystems } = await xo.call('nvmetcp.probe', { host, portals })
    assert.ok(subsystems.some(s => s.nqn === nqn), JSON.stringify(subsystems))
  })

  it('probe through discovery alone lists the subsystem', async () => {
    const { subsystems } = await xo.call('nvmetcp.probe', { host, discovery: [`${portals[0]}:4420`] })
    assert.ok(subsystems.some(s => s.nqn === nqn), JSON.stringify(subsystems))
  })

  it("a bad portal gives the driver's error code and sentence", async () => {
    await assert.rejects(xo.call('nvmetcp.probe', { host, portals: [`${portals[0]}:4999`], nqn }), error => {
      assert.equal(error.data.code, 'NVMETCP_NO_PATH', error.message)
      assert.match(error.data.sentence, /4999/)
      assert.equal(error.message, `NVMETCP_NO_PATH: ${error.data.sentence}`)
      return true
    })
    // A portal the driver cannot read: its own parser says why.
    await assert.rejects(xo.call('nvmetcp.probe', { host, portals: [`${portals[0]}:0`], nqn }), error => {
      assert.equal(error.data.code, 'NVMETCP_INVALID_CONFIG', error.message)
      assert.match(error.data.sentence, /the port must be 1-65535/)
      return true
    })
  })

  it('create makes a shared SR with a PBD per host, plugged, scanned', async () => {
    const { subsystems } = await xo.call('nvmetcp.probe', { host, portals, nqn })
    const { namespace } = subsystems[0].namespaces[0]
    created = await xo.call('nvmetcp.create', { host, nameLabel: 'from XO ✓', portals, nqn, namespace })
    assert.deepEqual(
      created.hosts.map(h => [h.host, h.attached, h.error]),
      [[host, true, undefined]]
    )
    const { sr, pbds } = await srByUuid(pool.xapi, created.uuid)
    assert.equal(sr.shared, true)
    assert.equal(sr.type, 'nvmetcp')
    assert.equal(sr.other_config['auto-scan'], 'true')
    const hostCount = Object.keys(await pool.xapi.call('host.get_all_records')).length
    assert.equal(pbds.length, hostCount)
    assert.ok(pbds.every(p => p.currently_attached))
    assert.equal(pbds[0].device_config.sr_uuid, created.uuid, "the driver's device-config is in every PBD")
    assert.ok(Number(sr.physical_size) > 0, 'XO offers only SRs with a size for new disks')
    const again = await xo.call('nvmetcp.probe', { host, portals, nqn })
    const shown = again.subsystems[0].namespaces[0]
    assert.equal(shown.sr.uuid, created.uuid)
    assert.equal(shown.sr.inPool, true)
  })

  it('a namespace holding an SR is refused by create', async () => {
    const { subsystems } = await xo.call('nvmetcp.probe', { host, portals, nqn })
    const { namespace } = subsystems[0].namespaces[0]
    await assert.rejects(xo.call('nvmetcp.create', { host, nameLabel: 'again', portals, nqn, namespace }), error => {
      assert.match(error.data.code, /^NVMETCP_/, error.message)
      return true
    })
  })

  it('reattach after SR.forget brings the same SR back with its volumes', async () => {
    const vdiRef = await pool.xapi.call('VDI.create', {
      SR: (await srByUuid(pool.xapi, created.uuid)).ref,
      name_label: 'vm disk',
      name_description: '',
      virtual_size: String(8 * MiB),
      type: 'user',
      sharable: false,
      read_only: false,
      other_config: {},
      xenstore_data: {},
      sm_config: {},
      tags: [],
    })
    volume = await pool.xapi.call('VDI.get_record', vdiRef)
    const { ref, pbds } = await srByUuid(pool.xapi, created.uuid)
    for (const pbd of await pool.xapi.call('SR.get_PBDs', ref)) {
      await pool.xapi.call('PBD.unplug', pbd)
    }
    assert.equal(pbds.length > 0, true)
    await pool.xapi.call('SR.forget', ref)

    const { subsystems } = await xo.call('nvmetcp.probe', { host, portals, nqn })
    const found = subsystems[0].namespaces[0].sr
    assert.equal(found.uuid, created.uuid)
    assert.equal(found.inPool, false, 'the forgotten SR is offered for reattach')
    assert.equal(found.nameLabel, 'from XO ✓')

    const back = await xo.call('nvmetcp.reattach', { host, srUuid: created.uuid, portals, nqn })
    assert.equal(back.uuid, created.uuid)
    assert.deepEqual(back.hosts.map(h => h.attached), [true])
    const { sr, pbds: newPbds, vdis } = await srByUuid(pool.xapi, created.uuid)
    assert.equal(sr.name_label, 'from XO ✓', 'the name comes back from the SR itself')
    assert.equal(sr.shared, true)
    assert.equal(sr.other_config['auto-scan'], 'true')
    assert.ok(newPbds.every(p => p.currently_attached))
    assert.deepEqual(
      vdis.map(v => [v.uuid, v.location, v.name_label, v.virtual_size]),
      [[volume.uuid, volume.location, 'vm disk', volume.virtual_size]]
    )
    await assert.rejects(xo.call('nvmetcp.reattach', { host, srUuid: created.uuid, portals, nqn }), error => {
      assert.equal(error.data.code, 'SR_UUID_EXISTS')
      return true
    })
    for (const pbd of await pool.xapi.call('SR.get_PBDs', (await srByUuid(pool.xapi, created.uuid)).ref)) {
      await pool.xapi.call('PBD.unplug', pbd)
    }
  })
})
