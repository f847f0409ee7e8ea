// Errors as Xen Orchestra's clients see them.
//
// xo-server passes an error that has `toJsonRpcError()` to every user as it
// is; any other error reaches non-admin users as "unknown error from the
// peer" (packages/xo-server/src/xo-mixins/api.mjs, `#callApiMethod`'s catch;
// XO's own errors are built the same way in packages/xo-common/api-errors.js).
// So every failure of this plugin is an `NvmetcpError` carrying the plugin's
// error code (docs/errors.md) and its sentence.

// JSON-RPC 2.0 reserves -32000..-32099 for implementation-defined server
// errors; XO's own codes are small positive numbers, so this one cannot be
// mistaken for one of them.
export const JSON_RPC_CODE = -32000

export class NvmetcpError extends Error {
  constructor(code, sentence, data = {}) {
    super(`${code}: ${sentence}`)
    this.name = 'NvmetcpError'
    this.code = code
    this.sentence = sentence
    this.data = data
  }

  toJsonRpcError() {
    return {
      code: JSON_RPC_CODE,
      message: this.message,
      data: { code: this.code, sentence: this.sentence, ...this.data },
    }
  }
}

// What XAPI's own codes mean for an administrator of this SR type.
const XAPI_SENTENCES = {
  SR_UNKNOWN_DRIVER: () =>
    'the nvmetcp SR type is not installed in this pool: install the nvmetcp RPM on every host, then restart the toolstack (xe-toolstack-restart)',
  SR_UUID_EXISTS: ([uuid]) => `the SR ${uuid} is already in this pool: it needs no reattach`,
  HOST_OFFLINE: ([host]) => `the host ${host} is offline`,
}

// An error raised by XAPI (xen-api's XapiError: `code` and `params`) or by
// the nvmetcp driver behind it. The driver's SMAPIv3 error record becomes the
// XAPI error it names (xapi's storage_utils `transform_storage_exn`), so its
// code is `NVMETCP_*` and params[0] is the driver's sentence.
export function fromXapi(error, context = {}) {
  if (error instanceof NvmetcpError) {
    return error
  }
  const code = error?.code
  const params = Array.isArray(error?.params) ? error.params.map(String) : []
  // Also in the SMAPIv1 spelling `SR_BACKEND_FAILURE_<code>`.
  const driverCode = typeof code === 'string' ? /^(?:SR_BACKEND_FAILURE_)?(NVMETCP_[A-Z0-9_]+)$/.exec(code)?.[1] : undefined
  if (driverCode !== undefined) {
    return new NvmetcpError(driverCode, params[0] ?? driverCode, { params: params.slice(1), ...context })
  }
  if (typeof code === 'string' && code in XAPI_SENTENCES) {
    return new NvmetcpError(code, XAPI_SENTENCES[code](params), { params, ...context })
  }
  if (typeof code === 'string' && /^[A-Z][A-Z0-9_]+$/.test(code)) {
    // Any other XAPI error: its code and parameters as XAPI gave them.
    return new NvmetcpError(code, params.length ? params.join(', ') : code, { params, ...context })
  }
  return error
}

export const invalid = (field, why) =>
  new NvmetcpError('NVMETCP_INVALID_CONFIG', `${field}: ${why}`, { field })
