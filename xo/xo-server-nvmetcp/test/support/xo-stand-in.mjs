// A stand-in for the part of xo-server a plugin meets: `addApiMethods`,
// `getXapi`, and the dispatch of a call as xo-server does it
// (packages/xo-server/src/xo-mixins/api.mjs): the method's `permission`,
// its `params` schema (XO's `optional` keyword, no unknown keys), its
// `resolve` entries (the id turned into the object, the user checked for
// the permission on it, `administrate` by default), then the error a client
// receives: an error with `toJsonRpcError()` as it is, any other one as
// "unknown error from the peer" unless the user is an admin. Behind it is a
// real `xen-api` client connected to the XAPI emulator, as xo-server's Xapi
// objects are `xen-api` clients.

const PERMISSIONS = { none: 0, read: 1, write: 2, operate: 3, administrate: 4, admin: 5 }

export const ADMIN = { id: 'admin', permission: 'admin' }

const typeOk = (schema, value) => {
  if (schema.enum !== undefined) {
    return schema.enum.includes(value)
  }
  switch (schema.type) {
    case 'string':
      return typeof value === 'string' && (schema.minLength === 0 || value.length > 0)
    case 'boolean':
      return typeof value === 'boolean'
    case 'integer':
      return Number.isInteger(value)
    case 'array':
      return Array.isArray(value) && value.every(item => typeOk(schema.items ?? {}, item))
    default:
      return true
  }
}

// xo-common/api-errors.js: invalidParameters (10), unauthorized (2), noSuchObject (1).
const rpcError = (code, message, data) => Object.assign(new Error(message), { code, data })

export class XoStandIn {
  #methods = new Map()
  #grants = new Map()

  constructor(xapi) {
    this.xapi = xapi
  }

  addApiMethods(tree) {
    const added = []
    const walk = (node, prefix) => {
      for (const [key, value] of Object.entries(node)) {
        const name = prefix + key
        if (typeof value === 'function') {
          if (this.#methods.has(name)) {
            throw new Error(`API method ${name} already exists`)
          }
          this.#methods.set(name, value)
          added.push(name)
        } else {
          walk(value, name + '.')
        }
      }
    }
    walk(tree, '')
    return () => added.forEach(name => this.#methods.delete(name))
  }

  method(name) {
    return this.#methods.get(name)
  }

  getXapi() {
    return this.xapi
  }

  grant(userId, objectId, permission) {
    this.#grants.set(`${userId} ${objectId}`, permission)
  }

  async #getObject(id, type) {
    if (type !== 'host') {
      throw rpcError(1, `no such ${type} ${id}`, { id, type })
    }
    const hosts = await this.xapi.call('host.get_all_records')
    const found = Object.entries(hosts).find(([, host]) => host.uuid === id)
    if (found === undefined) {
      throw rpcError(1, `no such host ${id}`, { id, type: 'host' })
    }
    const [ref, host] = found
    return { ...host, id: host.uuid, type: 'host', _xapiRef: ref }
  }

  #allowed(user, objectId, permission) {
    if (user.permission === 'admin') {
      return true
    }
    const granted = this.#grants.get(`${user.id} ${objectId}`) ?? 'none'
    return PERMISSIONS[granted] >= PERMISSIONS[permission]
  }

  // Calls `name` as `user`; resolves with the result or rejects with the
  // JSON-RPC error the client would receive ({code, message, data}).
  async call(name, params = {}, user = ADMIN) {
    const method = this.#methods.get(name)
    if (method === undefined) {
      throw rpcError(-32601, `method not found: ${name}`)
    }
    if (method.permission !== undefined && PERMISSIONS[user.permission] < PERMISSIONS[method.permission]) {
      throw rpcError(2, 'not enough permissions', { permission: method.permission })
    }
    const spec = method.params ?? {}
    for (const key of Object.keys(params)) {
      if (!(key in spec)) {
        throw rpcError(10, 'invalid parameters', [{ message: `must NOT have additional properties: ${key}` }])
      }
    }
    for (const [key, schema] of Object.entries(spec)) {
      if (params[key] === undefined) {
        if (!schema.optional) {
          throw rpcError(10, 'invalid parameters', [{ message: `must have required property '${key}'` }])
        }
      } else if (!typeOk(schema, params[key])) {
        throw rpcError(10, 'invalid parameters', [{ message: `${key} must be ${schema.type ?? 'one of the enum'}` }])
      }
    }
    const resolved = { ...params }
    for (const [key, [param, type, permission = 'administrate']] of Object.entries(method.resolve ?? {})) {
      if (params[param] === undefined) {
        continue
      }
      const object = await this.#getObject(params[param], type)
      if (permission && !this.#allowed(user, object.id, permission)) {
        throw rpcError(2, 'not enough permissions', { permission, object: { id: object.id, type } })
      }
      delete resolved[param]
      resolved[key] = object
    }
    try {
      return await method.call(this, resolved)
    } catch (error) {
      if (typeof error.toJsonRpcError === 'function') {
        const { code, message, data } = error.toJsonRpcError()
        throw rpcError(code, message, data)
      }
      if (user.permission === 'admin') {
        throw rpcError(-32000, error.message)
      }
      throw rpcError(-32000, 'unknown error from the peer')
    }
  }
}
