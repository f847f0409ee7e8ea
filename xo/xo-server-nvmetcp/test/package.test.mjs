// The package installs as the README says and as xo-server finds plugins:
// `npm pack`, then `npm install --global` of the tarball puts it in
// <prefix>/lib/node_modules (xo-server's default `plugins.lookupPaths`
// include /usr/local/lib/node_modules: packages/xo-server/config.toml), under
// a name xo-server picks up (`xo-server-*`, packages/xo-server/src/index.mjs
// `registerPlugins`), and its main module default-exports the factory.

import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { after, it } from 'node:test'
import { fileURLToPath, pathToFileURL } from 'node:url'

const packageDir = join(dirname(fileURLToPath(import.meta.url)), '..')
const scratch = mkdtempSync(join(tmpdir(), 'xo-server-nvmetcp-'))
after(() => rmSync(scratch, { recursive: true, force: true }))

it('installs from its tarball where xo-server looks for plugins, with no dependency', async () => {
  const npm = (...args) => execFileSync('npm', [...args, '--no-audit', '--no-fund', '--offline'], { cwd: scratch, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  npm('pack', packageDir)
  const [tarball] = readdirSync(scratch).filter(f => f.endsWith('.tgz'))
  assert.match(tarball, /^xo-server-nvmetcp-\d+\.\d+\.\d+\.tgz$/)
  npm('install', '--global', '--prefix', join(scratch, 'usr-local'), `./${tarball}`)
  const installed = join(scratch, 'usr-local/lib/node_modules/xo-server-nvmetcp')
  const manifest = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8'))
  assert.equal(manifest.dependencies, undefined, 'xo-server provides everything the plugin uses')
  assert.deepEqual(readdirSync(installed).sort(), ['package.json', 'src'])
  const { default: factory } = await import(pathToFileURL(join(installed, manifest.main)).href)
  const added = []
  const instance = factory({ xo: { addApiMethods: tree => (added.push(tree), () => added.pop()) }, staticConfig: {} })
  instance.load()
  assert.deepEqual(Object.keys(added[0].nvmetcp).sort(), ['create', 'probe', 'reattach'])
  instance.unload()
  assert.equal(added.length, 0)
})
