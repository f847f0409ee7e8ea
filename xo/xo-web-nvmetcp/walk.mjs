// Walks the "New SR" wizard's NVMe/TCP flow in headless Chromium against
// the patched xo-web build, served by the xo-server stand-in over the XAPI
// emulator, and saves a screenshot of each step. Run by ./run, which says
// what it needs.
//
//   node walk.mjs DIST XAPI_URL OUT_DIR PLAYWRIGHT_CORE_DIR

import assert from 'node:assert/strict'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

import { serve } from './xo-server-stand-in.mjs'
import { emulatedPool } from '../xo-server-nvmetcp/test/support/pool.mjs'

const [dist, xapiUrl, out, playwrightDir] = process.argv.slice(2)
const { chromium } = await import(pathToFileURL(join(playwrightDir, 'node_modules/playwright-core/index.mjs')).href)

const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
]

process.env.NVMETCP_XAPI_URL = xapiUrl
const pool = await emulatedPool()
const server = await serve({ dist, xapi: pool.xapi, log: line => console.error(`stand-in: ${line}`) })
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: FLAGS })
mkdirSync(out, { recursive: true })
let step = 0
const page = await (await browser.newContext({ viewport: { width: 1280, height: 1400 } })).newPage()
page.on('pageerror', error => console.error(`page error: ${error.message}`))
const shot = async name => {
  const file = join(out, `${String(++step).padStart(2, '0')}-${name}.png`)
  await page.screenshot({ path: file, fullPage: true })
  console.log(`step ${step}: ${name} -> ${file}`)
}

try {
  await page.context().addCookies([{ name: 'token', value: 'walk', url: server.url }])
  await page.goto(`${server.url}/#/new/sr`)
  await page.waitForSelector('#selectSrType', { timeout: 120e3 })
  // XO from the sources greets with a notice: dismissed.
  await page.locator('.modal-footer button', { hasText: 'OK' }).click({ timeout: 30e3 }).catch(() => {})
  // The host, chosen as a user does (XO's host selector).
  await page.locator('.Select-control').first().click()
  await page.locator('.Select-option', { hasText: `${pool.master.name_label} (` }).first().click()
  await page.selectOption('#selectSrType', 'nvmetcp')
  await page.waitForSelector('#srNvmeTcpPortals')
  await page.fill('#srNvmeTcpPortals', '10.0.1.10, 10.0.2.10')
  await shot('type-and-portals')

  // Search: the subsystems the portals' discovery service lists; the only
  // one is chosen and probed again with its NQN.
  await page.click('#srNvmeTcpPortals ~ .input-group-btn button')
  await page.getByText('nqn.2010-06.com.example:array1').first().waitFor({ timeout: 60e3 })
  await page.getByText(/NSID \d+:/).first().waitFor({ timeout: 60e3 }).catch(() => {})
  await shot('subsystem-found')

  // The namespace list, each with what it holds.
  const namespaceSelect = page.locator('.Select').last()
  await namespaceSelect.click()
  await page.getByText('NSID 2:').first().waitFor()
  await shot('namespaces-and-what-they-hold')

  // A namespace holding an SR that is not in this pool: reattach is offered,
  // and done (with no name typed, the SR keeps its own).
  const OLD_SR = '4c8f2d1a-7b3e-4f6a-9d2c-1e5b8a7f3c90'
  await page.getByText('NSID 2:').first().click()
  const reattach = page.locator(`p:has-text("${OLD_SR}") button`)
  await reattach.waitFor({ timeout: 30e3 })
  await shot('reattach-offered')
  await reattach.click()
  await page.getByText('In use').first().waitFor({ timeout: 60e3 })
  await shot('reattached-in-use')

  // An empty namespace: the summary and "Create".
  await page.fill('#srName', 'NVMe array')
  await page.fill('#srDescription', 'created from the wizard')
  await page.press('#srDescription', 'Tab')
  await namespaceSelect.click()
  await page.getByText('NSID 1:').first().click()
  await page.getByText('Create', { exact: true }).waitFor()
  await shot('summary-create')

  await page.getByText('Create', { exact: true }).click()
  await page.waitForURL(/#\/srs\//, { timeout: 60e3 })
  await page.waitForTimeout(2000)
  await shot('sr-created')
  const srs = Object.values(await pool.xapi.call('SR.get_all_records')).filter(sr => sr.type === 'nvmetcp')
  const back = srs.find(sr => sr.uuid === OLD_SR)
  const made = srs.find(sr => sr.uuid !== OLD_SR)
  assert.equal(srs.length, 2, 'one SR reattached, one created')
  assert.equal(back.name_label, 'old array', 'the reattached SR keeps its name')
  assert.equal(made.name_label, 'NVMe array')
  assert.ok(back.shared && made.shared)
  const hosts = Object.keys(await pool.xapi.call('host.get_all_records')).length
  assert.ok(srs.every(sr => sr.PBDs.length === hosts), 'a PBD per host')
  console.log(`reattached ${back.uuid} and created ${made.uuid}, each with ${hosts} PBDs`)
} catch (error) {
  await page.screenshot({ path: join(out, 'failure.png'), fullPage: true }).catch(() => {})
  throw error
} finally {
  await browser.close()
  server.close()
  await pool.close()
}
