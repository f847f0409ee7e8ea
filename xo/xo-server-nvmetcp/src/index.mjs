// xo-server-nvmetcp: Xen Orchestra server plugin for nvmetcp SRs.
//
// xo-server loads every `xo-server-*` package found in its
// `plugins.lookupPaths` (packages/xo-server/src/index.mjs `registerPlugins`)
// and calls the default export with `{ xo, staticConfig, getDataDir }`; the
// instance's `load` and `unload` run when an administrator enables or
// disables the plugin (packages/xo-server-test-plugin/index.js). Loading
// adds the API methods with `xo.addApiMethods`, which returns the function
// that removes them (packages/xo-server/src/xo-mixins/api.mjs).

import { methods } from './methods.mjs'

class NvmetcpPlugin {
  #xo
  #removeApiMethods

  constructor({ xo }) {
    this.#xo = xo
  }

  load() {
    this.#removeApiMethods = this.#xo.addApiMethods(methods(this.#xo))
  }

  unload() {
    this.#removeApiMethods?.()
    this.#removeApiMethods = undefined
  }
}

export default options => new NvmetcpPlugin(options)
