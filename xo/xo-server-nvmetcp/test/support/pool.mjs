// The emulated pool the tests talk to: the project's XAPI emulator
// (tests/xapi-emulator) over HTTP, through Xen Orchestra's real `xen-api`
// client from npm (installed by tests/xapi-peers/prepare).
//
// NVMETCP_XAPI_URL names an emulator already running (the test bed starts
// one with the real plugin behind it); otherwise the emulator binary
// (NVMETCP_XAPI_EMULATOR, default target/debug/xapi-emulator) is started
// here. A missing client or binary fails the run with the command to fix it.

import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath, pathToFileURL } from 'node:url'

export const root = join(dirname(fileURLToPath(import.meta.url)), '../../../..')

async function xenApi() {
  const peers = process.env.NVMETCP_PEERS_DIR ?? join(root, '.testbed-cache/xapi-peers')
  const entry = join(peers, 'node/node_modules/xen-api/index.mjs')
  if (!existsSync(entry)) {
    throw new Error(`the xen-api client is not installed in ${peers}: run tests/xapi-peers/prepare`)
  }
  return import(pathToFileURL(entry).href)
}

async function startEmulator(args) {
  const binary = process.env.NVMETCP_XAPI_EMULATOR ?? join(root, 'target/debug/xapi-emulator')
  if (!existsSync(binary)) {
    throw new Error(`no XAPI emulator at ${binary}: run cargo build -p xapi-emulator`)
  }
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'inherit'] })
  const [url] = await Promise.race([
    createInterface({ input: child.stdout })[Symbol.asyncIterator]().next().then(({ value }) => [value]),
    new Promise((resolve, reject) => child.once('exit', code => reject(new Error(`the emulator exited (${code})`)))),
  ])
  return { url, stop: () => child.kill() }
}

// Connects to an emulated pool of `hosts` hosts (whose storage answers
// probes from `probeFixture`, a file of the driver's probe results, if
// given); `close()` disconnects and stops what was started here.
export async function emulatedPool({ hosts = 3, probeFixture } = {}) {
  const { createClient } = await xenApi()
  const emulator = process.env.NVMETCP_XAPI_URL
    ? { url: process.env.NVMETCP_XAPI_URL, stop() {} }
    : await startEmulator(['--hosts', String(hosts), ...(probeFixture ? ['--probe-fixture', probeFixture] : [])])
  const xapi = createClient({
    url: emulator.url,
    auth: { user: 'root', password: 'xenroot' },
    allowUnauthorized: false,
    watchEvents: false,
  })
  await xapi.connect()
  const [pool] = Object.values(await xapi.call('pool.get_all_records'))
  const master = await xapi.call('host.get_record', pool.master)
  return {
    xapi,
    master,
    async close() {
      await xapi.disconnect()
      emulator.stop()
    },
  }
}

// The records of an SR, its PBDs and VDIs, by UUID.
export async function srByUuid(xapi, uuid) {
  const ref = await xapi.call('SR.get_by_uuid', uuid)
  const sr = await xapi.call('SR.get_record', ref)
  const pbds = await Promise.all(sr.PBDs.map(pbd => xapi.call('PBD.get_record', pbd)))
  const vdis = await Promise.all(sr.VDIs.map(vdi => xapi.call('VDI.get_record', vdi)))
  return { ref, sr, pbds, vdis }
}
