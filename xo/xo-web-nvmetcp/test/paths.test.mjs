// The path counts xo-web shows for a PBD (`getIscsiPaths` in
// packages/xo-web/src/common/utils.js), before and after
// xo-web-nvmetcp.patch, checked without xo-web (CI has no XO sources): both
// sides of the patch's utils.js hunk are evaluated on PBDs as xo-server
// makes them (`xapi-object-to-xo.mjs` `pbd()`: `device_config`,
// `otherConfig`) and as the nvmetcp agent publishes them
// (`sm-driver/src/agent/publish.rs`: `other_config:mpath-<device_config.namespace>`
// = `[live, total]`, `multipathed` = `true`).

import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { describe, it } from 'node:test'

const patch = readFileSync(new URL('../xo-web-nvmetcp.patch', import.meta.url), 'utf8')

// One side ('-' old, '+' new) of the utils.js hunk, as the functions it defines.
function side(sign) {
  const file = patch.split(/^diff --git /m).find(d => d.startsWith('a/packages/xo-web/src/common/utils.js '))
  assert.ok(file, 'the patch changes packages/xo-web/src/common/utils.js')
  const lines = file
    .split('\n')
    .filter(l => /^[ +-]/.test(l) && !/^(\+\+\+|---) /.test(l))
    .filter(l => l[0] === ' ' || l[0] === sign)
    .map(l => l.slice(1))
  const text = lines.join('\n')
  const start = text.search(/^export const (isNvmeMultipathPbd|getIscsiPaths)/m)
  const end = text.indexOf('\n}\n', text.indexOf('export const getIscsiPaths')) + 2
  assert.ok(start >= 0 && end > start, `getIscsiPaths in the ${sign} side of the hunk`)
  const body = text.slice(start, end).replace(/^export const /gm, 'const ')
  const names = [...body.matchAll(/^const (\w+)/gm)].map(m => m[1])
  // eslint-disable-next-line no-new-func
  return new Function(`${body}\nreturn { ${names.join(', ')} }`)()
}

const NAMESPACE = 'uuid.3f1c6d0e8a8f4e0a9b5e2d7c1f0a9e11'
// device-config as nvmetcp's SR.create stores it; other_config as its agent sets it.
const nvmePbd = counts => ({
  device_config: {
    portals: '10.0.0.1,10.0.0.2',
    nqn: 'nqn.2014-08.org.example:array',
    namespace: NAMESPACE,
    sr_uuid: '3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11',
  },
  otherConfig: counts === undefined ? {} : { [`mpath-${NAMESPACE}`]: counts, multipathed: 'true' },
})
const iscsiPbd = {
  device_config: { target: '10.0.0.9', targetIQN: 'iqn.2001-05.com.example:lun', SCSIid: '36001405abcdef' },
  otherConfig: { 'mpath-36001405abcdef': '[1, 2]', multipathed: 'true', iscsi_sessions: '2' },
}

describe('xo-web getIscsiPaths', () => {
  it('unpatched, reads only mpath-<SCSIid>, so an NVMe namespace shows nothing', () => {
    const { getIscsiPaths } = side('-')
    assert.deepEqual(getIscsiPaths(iscsiPbd), [1, 2])
    assert.deepEqual(getIscsiPaths(nvmePbd('[1, 2]')), [])
  })

  it('patched, reads mpath-<device_config.namespace> for an NVMe namespace', () => {
    const { getIscsiPaths, isNvmeMultipathPbd } = side('+')
    assert.deepEqual(getIscsiPaths(nvmePbd('[1, 2]')), [1, 2])
    assert.deepEqual(getIscsiPaths(nvmePbd('[2, 2]')), [2, 2])
    assert.deepEqual(getIscsiPaths(nvmePbd(undefined)), [], 'no counts published yet')
    assert.equal(isNvmeMultipathPbd(nvmePbd('[2, 2]')), true)
  })

  it('patched, keeps reading mpath-<SCSIid> for a LUN', () => {
    const { getIscsiPaths, isNvmeMultipathPbd } = side('+')
    assert.deepEqual(getIscsiPaths(iscsiPbd), [1, 2])
    assert.equal(isNvmeMultipathPbd(iscsiPbd), false)
  })

  it('patched, turns the SR pill to "inactive path" for a degraded host (sr-item.js)', () => {
    const { getIscsiPaths } = side('+')
    // sr-item.js: multipathable && some(pbds, pbd => nActives !== nPaths) → status 3.
    const inactive = pbds => pbds.some(pbd => {
      const [nActives, nPaths] = getIscsiPaths(pbd)
      return nActives !== nPaths
    })
    assert.equal(inactive([nvmePbd('[2, 2]'), nvmePbd('[1, 2]')]), true)
    assert.equal(inactive([nvmePbd('[2, 2]'), nvmePbd('[2, 2]')]), false)
  })
})

describe('the patch shows NVMe path counts whatever the host dm-multipath setting', () => {
  it('host Advanced tab and SR Hosts tab use isNvmeMultipathPbd', () => {
    assert.match(patch, /^\+\s+<MultipathableSrs hostId=\{host\.id\} nvmeOnly=\{!host\.multipathing\} \/>$/m)
    assert.match(patch, /^-\s+\{host\.multipathing && <MultipathableSrs hostId=\{host\.id\} \/>\}$/m)
    assert.match(patch, /^\+\s+if \(!isNvmeMultipathPbd\(pbd\) && !get\(\(\) => hosts\[pbd\.host\]\.multipathing\)\) \{$/m)
  })
})
