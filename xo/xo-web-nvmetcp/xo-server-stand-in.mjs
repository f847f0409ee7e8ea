// Just enough of xo-server for xo-web's "New SR" page, for the wizard walk:
// xo-web's build served over HTTP, and its JSON-RPC API over a WebSocket at
// /api/ (xo-lib: packages/xo-lib/src/index.js; the calls xo-web makes when
// it connects: packages/xo-web/src/common/xo/index.js `connectStore`).
// `session.signIn` gives an admin; `xo.getAllObjects` hands the pool, its
// hosts and SRs as xo-server shapes them (packages/xo-server/src/
// xapi-object-to-xo.mjs, the fields the wizard and the SR pages read),
// read from the XAPI emulator and pushed again as `all` notifications when
// they change; the nvmetcp.* methods are the real xo-server-nvmetcp plugin
// under the same dispatch stand-in its tests use. Any other method answers
// "method not found", as xo-server does for a method it does not have.

import { createReadStream, existsSync, statSync } from 'node:fs'
import { createServer } from 'node:http'
import { extname, join, normalize } from 'node:path'

import plugin from '../xo-server-nvmetcp/src/index.mjs'
import { XoStandIn } from '../xo-server-nvmetcp/test/support/xo-stand-in.mjs'

const USER = { id: 'walk-admin', email: 'admin@admin.net', permission: 'admin', preferences: {} }

const TYPES = {
  '.css': 'text/css',
  '.html': 'text/html',
  '.js': 'application/javascript',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
  '.woff': 'font/woff',
  '.woff2': 'font/woff2',
  '.ttf': 'font/ttf',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
}

// What xo-web's connect sequence and its always-on subscriptions call.
const DEFAULTS = {
  'acl.getCurrentPermissions': () => ({}),
  'session.getUser': () => USER,
  'user.getAll': () => [USER],
  'group.getAll': () => [],
  'plugin.get': () => [],
  'remote.getAll': () => [],
  'server.getAll': () => [],
  'proxy.getAll': () => [],
  'job.getAll': () => [],
  'schedule.getAll': () => [],
  'backupNg.getAllJobs': () => [],
  'metadataBackup.getAllJobs': () => [],
  'mirrorBackup.getAllJobs': () => [],
  'cloudConfig.getAll': () => [],
  'resourceSet.getAll': () => [],
  'role.getAll': () => [],
  'ipPool.getAll': () => [],
  'system.getServerVersion': () => '5.0.0',
  'system.getServerTimezone': () => 'UTC',
  'xo.getAllObjects': () => ({ $getFrom: '/api/objects.ndjson' }),
}

async function xoObjects(xapi) {
  const [pools, hosts, srs, pbds] = await Promise.all(
    ['pool', 'host', 'SR', 'PBD'].map(type => xapi.call(`${type}.get_all_records`))
  )
  const uuidOf = (records, ref) => records[ref]?.uuid
  const [[poolRef, pool]] = Object.entries(pools)
  const objects = [
    {
      id: pool.uuid,
      uuid: pool.uuid,
      type: 'pool',
      name_label: pool.name_label || 'emulated pool',
      name_description: pool.name_description,
      master: uuidOf(hosts, pool.master),
      default_SR: undefined,
      $pool: pool.uuid,
      $poolId: pool.uuid,
      _xapiRef: poolRef,
      tags: [],
      other_config: {},
    },
  ]
  for (const [ref, host] of Object.entries(hosts)) {
    objects.push({
      id: host.uuid,
      uuid: host.uuid,
      type: 'host',
      name_label: host.name_label,
      name_description: host.name_description,
      hostname: host.hostname,
      address: host.address,
      enabled: true,
      power_state: 'Running',
      // The emulator keeps no metrics: a plausible machine for the pickers.
      memory: { size: 64 * 2 ** 30, usage: 8 * 2 ** 30 },
      cpus: { cores: 8, sockets: 1 },
      CPUs: {},
      residentVms: [],
      rebootRequired: false,
      productBrand: 'XCP-ng',
      version: '8.3.0',
      $pool: pool.uuid,
      $poolId: pool.uuid,
      $PBDs: host.PBDs.map(p => uuidOf(pbds, p)),
      _xapiRef: ref,
      tags: [],
      other_config: {},
    })
  }
  for (const [ref, sr] of Object.entries(srs)) {
    const srPbds = sr.PBDs.map(p => pbds[p])
    objects.push({
      id: sr.uuid,
      uuid: sr.uuid,
      type: 'SR',
      name_label: sr.name_label,
      name_description: sr.name_description,
      SR_type: sr.type,
      content_type: sr.content_type,
      shared: sr.shared,
      size: +sr.physical_size,
      physical_usage: +sr.physical_utilisation,
      usage: +sr.virtual_allocation,
      allocationStrategy: sr.type === 'nvmetcp' ? 'thick' : undefined,
      $container: sr.shared || srPbds.length === 0 ? pool.uuid : uuidOf(hosts, srPbds[0].host),
      $pool: pool.uuid,
      $poolId: pool.uuid,
      $PBDs: sr.PBDs.map(p => uuidOf(pbds, p)),
      VDIs: [],
      other_config: sr.other_config,
      sm_config: sr.sm_config,
      current_operations: {},
      inMaintenanceMode: false,
      tags: [],
      _xapiRef: ref,
    })
  }
  for (const [ref, pbd] of Object.entries(pbds)) {
    objects.push({
      id: pbd.uuid,
      uuid: pbd.uuid,
      type: 'PBD',
      attached: pbd.currently_attached,
      host: uuidOf(hosts, pbd.host),
      SR: uuidOf(srs, pbd.SR),
      device_config: pbd.device_config,
      otherConfig: {},
      $pool: pool.uuid,
      $poolId: pool.uuid,
      _xapiRef: ref,
    })
  }
  return objects
}

// One WebSocket text frame of at most 64 KiB from a client (masked), or
// undefined for control frames; replies go unmasked (RFC 6455).
function frames(socket, onText) {
  let buffer = Buffer.alloc(0)
  socket.on('data', chunk => {
    buffer = Buffer.concat([buffer, chunk])
    for (;;) {
      if (buffer.length < 2) return
      const opcode = buffer[0] & 0x0f
      let length = buffer[1] & 0x7f
      let offset = 2
      if (length === 126) {
        if (buffer.length < 4) return
        length = buffer.readUInt16BE(2)
        offset = 4
      } else if (length === 127) {
        if (buffer.length < 10) return
        length = Number(buffer.readBigUInt64BE(2))
        offset = 10
      }
      const masked = buffer[1] & 0x80
      const mask = masked ? buffer.subarray(offset, offset + 4) : undefined
      offset += masked ? 4 : 0
      if (buffer.length < offset + length) return
      const payload = Buffer.from(buffer.subarray(offset, offset + length))
      if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4]
      buffer = buffer.subarray(offset + length)
      if (opcode === 0x1) onText(payload.toString('utf8'))
      else if (opcode === 0x8) socket.end()
      else if (opcode === 0x9) socket.write(frame(payload, 0xa))
    }
  })
}

function frame(payload, opcode = 0x1) {
  const data = Buffer.isBuffer(payload) ? payload : Buffer.from(payload, 'utf8')
  const head =
    data.length < 126
      ? Buffer.from([0x80 | opcode, data.length])
      : data.length < 65536
        ? Buffer.from([0x80 | opcode, 126, data.length >> 8, data.length & 0xff])
        : Buffer.concat([Buffer.from([0x80 | opcode, 127]), (b => (b.writeBigUInt64BE(BigInt(data.length)), b))(Buffer.alloc(8))])
  return Buffer.concat([head, data])
}

export async function serve({ dist, xapi, port = 0, log = () => {} }) {
  const xo = new XoStandIn(xapi)
  plugin({ xo }).load()
  const sockets = new Set()
  let last = ''

  const notifyChanges = async () => {
    const items = Object.fromEntries((await xoObjects(xapi)).map(o => [o.id, o]))
    const text = JSON.stringify(items)
    if (text !== last) {
      last = text
      const message = JSON.stringify({ jsonrpc: '2.0', method: 'all', params: { type: 'enter', items } })
      for (const socket of sockets) socket.write(frame(message))
    }
  }
  const poller = setInterval(() => notifyChanges().catch(() => {}), 1000)

  const server = createServer(async (request, response) => {
    const url = new URL(request.url, 'http://stand-in')
    if (url.pathname === '/api/objects.ndjson') {
      const objects = await xoObjects(xapi)
      response.writeHead(200, { 'content-type': 'application/x-ndjson' })
      response.end(objects.map(o => JSON.stringify(o)).join('\n') + '\n')
      return
    }
    const path = normalize(join(dist, url.pathname === '/' ? 'index.html' : decodeURIComponent(url.pathname)))
    if (!path.startsWith(dist) || !existsSync(path) || !statSync(path).isFile()) {
      response.writeHead(404)
      response.end()
      return
    }
    response.writeHead(200, { 'content-type': TYPES[extname(path)] ?? 'application/octet-stream' })
    createReadStream(path).pipe(response)
  })

  server.on('upgrade', async (request, socket) => {
    const { createHash } = await import('node:crypto')
    const accept = createHash('sha1')
      .update(request.headers['sec-websocket-key'] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11')
      .digest('base64')
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Accept: ${accept}\r\n\r\n`
    )
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => sockets.delete(socket))
    frames(socket, async text => {
      const { id, method, params } = JSON.parse(text)
      const reply = body => id !== undefined && socket.write(frame(JSON.stringify({ jsonrpc: '2.0', id, ...body })))
      try {
        let result
        if (method === 'session.signIn') {
          result = USER
        } else if (method.startsWith('nvmetcp.')) {
          result = await xo.call(method, params ?? {})
          notifyChanges().catch(() => {})
        } else if (method in DEFAULTS) {
          result = await DEFAULTS[method](params)
        } else {
          log(`not in the stand-in: ${method}`)
          reply({ error: { code: -32601, message: `method not found: ${method}` } })
          return
        }
        reply({ result: result === undefined ? true : result })
      } catch (error) {
        log(`${method} failed: ${error.message}`)
        reply({ error: { code: error.code ?? -32000, message: error.message, data: error.data } })
      }
    })
  })

  await new Promise(resolve => server.listen(port, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close() {
      clearInterval(poller)
      for (const socket of sockets) socket.destroy()
      server.close()
    },
  }
}
