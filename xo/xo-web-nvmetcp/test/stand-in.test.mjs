// The xo-server stand-in the wizard walk serves xo-web with, checked without
// xo-web (CI has no XO sources): its HTTP files and objects, and its
// JSON-RPC over a WebSocket as xo-lib speaks it, with the real plugin behind
// `nvmetcp.*` and the XAPI emulator answering probes from the fixture.

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'

import { emulatedPool, root } from '../../xo-server-nvmetcp/test/support/pool.mjs'
import { serve } from '../xo-server-stand-in.mjs'

// A WebSocket client of RFC 6455's text frames (masked, as clients must).
function connect(url) {
  return new Promise((resolve, reject) => {
    const req = request(url, {
      headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': randomBytes(16).toString('base64') },
    })
    req.on('error', reject)
    req.on('upgrade', (response, socket) => {
      const waiting = new Map()
      const notifications = []
      let buffer = Buffer.alloc(0)
      socket.on('data', chunk => {
        buffer = Buffer.concat([buffer, chunk])
        for (;;) {
          if (buffer.length < 2) return
          let length = buffer[1] & 0x7f
          let offset = 2
          if (length === 126) [length, offset] = [buffer.readUInt16BE(2), 4]
          else if (length === 127) [length, offset] = [Number(buffer.readBigUInt64BE(2)), 10]
          if (buffer.length < offset + length) return
          const message = JSON.parse(buffer.subarray(offset, offset + length).toString('utf8'))
          buffer = buffer.subarray(offset + length)
          if (message.id !== undefined) waiting.get(message.id)?.(message)
          else notifications.push(message)
        }
      })
      let id = 0
      resolve({
        notifications,
        call(method, params = {}) {
          const payload = Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: ++id, method, params }))
          const mask = randomBytes(4)
          const head = payload.length < 126 ? Buffer.from([0x81, 0x80 | payload.length]) : Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 0xff])
          const body = Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4]))
          socket.write(Buffer.concat([head, mask, body]))
          return new Promise(done => waiting.set(id, done))
        },
        close: () => socket.destroy(),
      })
    })
    req.end()
  })
}

const get = url => fetch(url).then(async response => ({ status: response.status, text: await response.text() }))

describe('the xo-server stand-in of the wizard walk', () => {
  let pool, server, client, dist

  before(async () => {
    dist = mkdtempSync(join(tmpdir(), 'xo-web-dist-'))
    writeFileSync(join(dist, 'index.html'), '<!doctype html><title>xo-web</title>')
    pool = await emulatedPool({ hosts: 3, probeFixture: join(root, 'xo/xo-web-nvmetcp/probe-fixture.json') })
    server = await serve({ dist, xapi: pool.xapi })
    client = await connect(`${server.url}/api/`)
  })
  after(async () => {
    client?.close()
    server?.close()
    await pool?.close()
    rmSync(dist, { recursive: true, force: true })
  })

  it("serves xo-web's files and nothing outside them", async () => {
    assert.deepEqual(await get(`${server.url}/`), { status: 200, text: '<!doctype html><title>xo-web</title>' })
    assert.equal((await get(`${server.url}/../../etc/passwd`)).status, 404)
  })

  it('signs in an admin and hands the pool, its hosts and SRs as xo-server shapes them', async () => {
    const { result: user } = await client.call('session.signIn', { token: 'walk' })
    assert.equal(user.permission, 'admin')
    const { result } = await client.call('xo.getAllObjects', { ndjson: true })
    const objects = (await get(server.url + result.$getFrom)).text.trim().split('\n').map(line => JSON.parse(line))
    const [pool_] = objects.filter(o => o.type === 'pool')
    const hosts = objects.filter(o => o.type === 'host')
    assert.equal(hosts.length, 3)
    assert.ok(hosts.every(h => h.$pool === pool_.id && h.id === h.uuid && h._xapiRef.startsWith('OpaqueRef:')))
    assert.ok(hosts.some(h => h.id === pool_.master))
  })

  it("answers nvmetcp.* through the plugin, and what it lacks as xo-server does", async () => {
    const { result } = await client.call('nvmetcp.probe', { host: pool.master.uuid, portals: ['10.0.1.10'] })
    assert.deepEqual(result.subsystems.map(s => s.nqn), ['nqn.2010-06.com.example:array1'])
    const { error } = await client.call('sr.createIscsi', {})
    assert.equal(error.code, -32601)
    const failed = await client.call('nvmetcp.probe', { host: pool.master.uuid })
    assert.equal(failed.error.data.code, 'NVMETCP_INVALID_CONFIG')
  })

  it('pushes the SR a create makes as an `all` notification', async () => {
    const { result } = await client.call('nvmetcp.create', {
      host: pool.master.uuid,
      nameLabel: 'pushed',
      portals: ['10.0.1.10'],
      nqn: 'nqn.2010-06.com.example:array1',
      namespace: 'uuid.6f1c2a44-9a3e-4b8e-8c55-0d2f9b1e7a01',
    })
    for (let i = 0; i < 50 && !client.notifications.some(n => n.params.items[result.uuid]); i++) {
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    const pushed = client.notifications.find(n => n.method === 'all' && n.params.items[result.uuid])
    assert.ok(pushed, 'notified')
    const sr = pushed.params.items[result.uuid]
    assert.equal(sr.type, 'SR')
    assert.equal(sr.SR_type, 'nvmetcp')
    assert.equal(sr.shared, true)
    assert.equal(sr.$PBDs.length, 3)
  })
})
