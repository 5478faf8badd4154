/**
 * The pure part of the Courier JavaScript SDK: message shapes, body encodings, errors, the
 * handler's context and the plugin builder.
 *
 * Nothing here imports `courier:bus/*`: the host functions are passed in as a {@link Host}
 * object, so this module runs unchanged under Node for tests. `index.js` wires it to the real
 * imports inside a component.
 *
 * @module
 */

import { decode as decodeMsgpack, encode as encodeMsgpackValue } from '@msgpack/msgpack';

// ---------------------------------------------------------------------------------------------
// Content types
// ---------------------------------------------------------------------------------------------

/** The MIME type of MessagePack bodies (maps with field names), the default encoding. */
export const MSGPACK = 'application/msgpack';

/** The MIME type of JSON bodies. */
export const JSON_MIME = 'application/json';

const MIME_KINDS = new Map([
  ['application/msgpack', 'msgpack'],
  ['application/x-msgpack', 'msgpack'],
  ['application/vnd.msgpack', 'msgpack'],
  ['application/json', 'json'],
]);

/**
 * Recognises a MIME type. Parameters such as `; charset=utf-8` and letter case are ignored.
 *
 * @param {string} mime the envelope's content type
 * @returns {'msgpack' | 'json' | undefined} the encoding, or `undefined` if it is not one the
 *   SDK speaks
 */
export function parseContentType(mime) {
  const essence = String(mime ?? '').split(';')[0].trim().toLowerCase();
  return MIME_KINDS.get(essence);
}

/**
 * The MIME type carried in the envelope for an encoding.
 *
 * @param {'msgpack' | 'json'} kind
 * @returns {string}
 */
export function mimeOf(kind) {
  return kind === 'json' ? JSON_MIME : MSGPACK;
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/**
 * Thrown by a handler for a transient failure (a dependency is down, a lock is held): the host
 * delivers the message again later.
 */
export class Retry extends Error {
  /**
   * @param {string} reason why the message could not be handled now
   * @param {ErrorOptions} [options] e.g. `{ cause }`
   */
  constructor(reason, options) {
    super(String(reason), options);
    this.name = 'Retry';
  }

  /** The reason handed to the host. */
  get reason() {
    return this.message;
  }
}

/**
 * Thrown by a handler for a permanent failure (the message is invalid, a rule forbids it): the
 * host moves the message to the error queue at once.
 */
export class Reject extends Error {
  /**
   * @param {string} reason why the message will never be handled
   * @param {ErrorOptions} [options] e.g. `{ cause }`
   */
  constructor(reason, options) {
    super(String(reason), options);
    this.name = 'Reject';
  }

  /** The reason handed to the host. */
  get reason() {
    return this.message;
  }
}

/** @typedef {'denied' | 'invalid' | 'unavailable'} BusErrorKind */

const BUS_ERROR_KINDS = new Set(['denied', 'invalid', 'unavailable']);

/**
 * Why the host refused a publish, send or reply. Its message reads `<kind>: <reason>`.
 *
 * Left uncaught in a handler, an `unavailable` bus is retried; a `denied` or `invalid` message
 * is rejected, since sending it again would be refused again.
 */
export class BusError extends Error {
  /**
   * @param {BusErrorKind} kind `denied` (the plugin may not do this, e.g. past its publish
   *   limit), `invalid` (the message is malformed) or `unavailable` (the bus cannot take it now)
   * @param {string} reason the host's explanation
   */
  constructor(kind, reason) {
    super(`${kind}: ${reason}`);
    this.name = 'BusError';
    /** @type {BusErrorKind} */
    this.kind = kind;
    /** @type {string} */
    this.reason = String(reason);
  }
}

/**
 * Turns what a bus import threw into a {@link BusError}. The component bindings throw an error
 * whose `payload` is the WIT variant `{ tag, val }`; anything else is passed through unchanged.
 *
 * @param {unknown} thrown
 * @returns {unknown}
 */
export function busErrorFrom(thrown) {
  if (thrown instanceof BusError) return thrown;
  const variant = thrown !== null && typeof thrown === 'object' && 'payload' in thrown
    ? thrown.payload
    : thrown;
  if (variant !== null && typeof variant === 'object' && BUS_ERROR_KINDS.has(variant.tag)) {
    return new BusError(variant.tag, String(variant.val ?? ''));
  }
  return thrown;
}

/**
 * The name of what was thrown, for the reason of an unplanned failure: the error's `name`, or
 * its class name when a subclass of `Error` did not set one.
 */
function errorName(error) {
  if (typeof error.name === 'string' && error.name !== '' && error.name !== 'Error') {
    return error.name;
  }
  const constructorName = error.constructor?.name;
  return typeof constructorName === 'string' && constructorName !== '' ? constructorName : 'Error';
}

function describeThrown(value) {
  if (typeof value === 'string') return value;
  try {
    const text = JSON.stringify(value);
    if (text !== undefined) return text;
  } catch {
    // fall through to String()
  }
  return String(value);
}

/**
 * The WIT `handle-error` for what a handler threw:
 *
 * - {@link Retry} and {@link Reject} carry their reason;
 * - a {@link BusError}: `unavailable` is retried, `denied` and `invalid` are rejected, with the
 *   reason `<kind>: <reason>`;
 * - anything else is an unplanned failure, treated as transient like a trap: retried with the
 *   reason `unhandled <ErrorName>: <message>`.
 *
 * @param {unknown} thrown
 * @returns {{ tag: 'retry' | 'reject', val: string }}
 */
export function toHandleError(thrown) {
  const error = busErrorFrom(thrown);
  if (error instanceof Retry) return { tag: 'retry', val: error.message };
  if (error instanceof Reject) return { tag: 'reject', val: error.message };
  if (error instanceof BusError) {
    return { tag: error.kind === 'unavailable' ? 'retry' : 'reject', val: error.message };
  }
  if (error instanceof Error) {
    const name = errorName(error);
    return { tag: 'retry', val: error.message ? `unhandled ${name}: ${error.message}` : `unhandled ${name}` };
  }
  return { tag: 'retry', val: `unhandled ${error === null ? 'null' : typeof error}: ${describeThrown(error)}` };
}

// ---------------------------------------------------------------------------------------------
// Shapes
// ---------------------------------------------------------------------------------------------

const SCALARS = {
  string: { noun: 'a string', test: (v) => typeof v === 'string' },
  integer: {
    noun: 'an integer',
    test: (v) => (typeof v === 'number' && Number.isInteger(v) && v >= -(2 ** 63) && v < 2 ** 64)
      || (typeof v === 'bigint' && v >= -(2n ** 63n) && v < 2n ** 64n),
  },
  number: { noun: 'a number', test: (v) => typeof v === 'number' || typeof v === 'bigint' },
  boolean: { noun: 'a boolean', test: (v) => typeof v === 'boolean' },
  any: { noun: 'a value', test: (v) => v !== undefined },
};

/** Marks a field that may be absent or `null`. Create it with {@link optional}. */
export class Optional {
  /** @param {Shape} shape the field's shape when it is present */
  constructor(shape) {
    this.shape = shape;
    Object.freeze(this);
  }
}

/**
 * A shape describes a message body, as a value of the same form:
 *
 * - `'string'`, `'integer'`, `'number'` (a float; integers are accepted), `'boolean'`, or
 *   `'any'` (whatever the body holds, unchecked);
 * - `[shape]`: a list whose items all have `shape`;
 * - `{ field: shape, ... }`: a map with these fields (fields not listed are ignored when
 *   decoding and left out when encoding);
 * - `optional(shape)`: the field may be missing or `null`; it decodes and encodes as `null`.
 *
 * @typedef {string | Shape[] | { [field: string]: Shape } | Optional} Shape
 */

/**
 * Marks a field as optional: it may be missing or `null`, and decodes as `null` then.
 *
 * @param {Shape} shape the field's shape when it is present
 * @returns {Optional}
 */
export function optional(shape) {
  return new Optional(shape);
}

/** Why a value does not fit a shape; its message names the field. */
export class ShapeError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ShapeError';
  }
}

function isPlainMap(value) {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

// A shape is compiled once, when the message type is declared, into nodes:
// { kind: 'scalar', name } | { kind: 'list', item } | { kind: 'map', fields: [[key, node]] }
// | { kind: 'optional', inner }.
function compile(shape, where) {
  if (typeof shape === 'string') {
    if (!Object.hasOwn(SCALARS, shape)) {
      throw new TypeError(
        `${where}: unknown type '${shape}' (expected one of ${Object.keys(SCALARS).join(', ')}, a [list], a {map} or optional(...))`,
      );
    }
    return { kind: 'scalar', name: shape };
  }
  if (shape instanceof Optional) {
    return { kind: 'optional', inner: compile(shape.shape, where) };
  }
  if (Array.isArray(shape)) {
    if (shape.length !== 1) {
      throw new TypeError(`${where}: a list shape holds exactly one item shape, e.g. ['string']`);
    }
    return { kind: 'list', item: compile(shape[0], `${where}[]`) };
  }
  if (isPlainMap(shape)) {
    const fields = Object.entries(shape).map(([key, field]) => {
      if (key === '__proto__') throw new TypeError(`${where}: '__proto__' cannot be a field name`);
      return [key, compile(field, where === 'shape' ? key : `${where}.${key}`)];
    });
    return { kind: 'map', fields };
  }
  throw new TypeError(`${where}: a shape is a type name, a [list], a {map} or optional(...)`);
}

function fieldPath(path, key) {
  return path === '' ? key : `${path}.${key}`;
}

function kindOf(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (value instanceof Uint8Array) return 'bytes';
  if (typeof value === 'object') return 'a map';
  if (typeof value === 'number') return Number.isInteger(value) ? 'an integer' : 'a float';
  if (typeof value === 'bigint') return 'an integer';
  return `a ${typeof value}`;
}

function misfit(path, noun, value) {
  const subject = path === '' ? 'the body' : `field \`${path}\``;
  return new ShapeError(`${subject} is not ${noun} (found ${kindOf(value)})`);
}

// Checks `value` against a compiled node and returns a fresh copy holding only what the shape
// declares (integers given as floats stay numbers; bigints become numbers where that is exact).
function conform(node, value, path) {
  switch (node.kind) {
    case 'scalar': {
      const scalar = SCALARS[node.name];
      if (!scalar.test(value)) throw misfit(path, scalar.noun, value);
      if (typeof value !== 'bigint') return value;
      // MessagePack integers are decoded as bigints, so that none is rounded; those a Number
      // holds exactly become Numbers again, as do the ones a float field receives.
      const safe = value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER);
      return node.name === 'number' || safe ? Number(value) : value;
    }
    case 'optional':
      return value === undefined || value === null ? null : conform(node.inner, value, path);
    case 'list':
      if (!Array.isArray(value)) throw misfit(path, 'a list', value);
      return value.map((item, index) => conform(node.item, item, `${path}[${index}]`));
    case 'map': {
      if (!isPlainMap(value)) throw misfit(path, 'a map', value);
      const out = {};
      for (const [key, field] of node.fields) {
        const present = Object.hasOwn(value, key) && value[key] !== undefined;
        if (!present && field.kind !== 'optional') {
          throw new ShapeError(`missing field \`${fieldPath(path, key)}\``);
        }
        out[key] = conform(field, present ? value[key] : undefined, fieldPath(path, key));
      }
      return out;
    }
    default:
      throw new Error(`unknown shape node ${node.kind}`);
  }
}

/**
 * A message type: a URN and the shape of its body. Declare it with {@link message}.
 */
export class MessageType {
  #node;

  /**
   * @param {string} urn the message type URN, e.g. `urn:message:Orders:OrderPlaced`
   * @param {Shape} shape the body's shape
   */
  constructor(urn, shape) {
    if (typeof urn !== 'string' || urn === '') {
      throw new TypeError('a message type needs a URN, e.g. urn:message:Orders:OrderPlaced');
    }
    const node = compile(shape, 'shape');
    if (node.kind !== 'map') throw new TypeError(`${urn}: the shape of a body is a {map} of fields`);
    /** The message type URN. */
    this.urn = urn;
    /** The shape the type was declared with. */
    this.shape = shape;
    this.#node = node;
    Object.freeze(this);
  }

  /**
   * Checks a value against the shape.
   *
   * @param {unknown} value
   * @returns {object} a copy holding the declared fields only, missing optional fields `null`
   * @throws {ShapeError} naming the first field that does not fit
   */
  conform(value) {
    return conform(this.#node, value, '');
  }

  /**
   * Encodes a body of this type.
   *
   * @param {object} body
   * @param {'msgpack' | 'json'} [kind]
   * @returns {Uint8Array}
   * @throws {ShapeError} if the body does not fit the shape
   */
  encode(body, kind = 'msgpack') {
    const value = this.conform(body);
    return kind === 'json' ? encodeJson(value) : encodeMsgpack(value);
  }

  /**
   * Decodes a body of this type.
   *
   * @param {Uint8Array} bytes
   * @param {'msgpack' | 'json'} [kind]
   * @returns {object}
   * @throws {Error} if the bytes are not valid in the encoding or do not fit the shape
   */
  decode(bytes, kind = 'msgpack') {
    const raw = kind === 'json'
      ? JSON.parse(utf8Decoder().decode(bytes))
      : decodeMsgpack(bytes, { useBigInt64: true });
    return this.conform(raw);
  }

  toString() {
    return this.urn;
  }
}

/**
 * Declares a message type.
 *
 * ```js
 * const OrderPlaced = message('urn:message:Orders:OrderPlaced', {
 *   order_id: 'string',
 *   lines: [{ sku: 'string', quantity: 'integer' }],
 *   amount_cents: 'integer',
 *   note: optional('string'),
 * });
 * ```
 *
 * @param {string} urn the message type URN
 * @param {{ [field: string]: Shape }} shape the fields of the body
 * @returns {MessageType}
 */
export function message(urn, shape) {
  return new MessageType(urn, shape);
}

// ---------------------------------------------------------------------------------------------
// Encodings
// ---------------------------------------------------------------------------------------------

let decoder;
function utf8Decoder() {
  decoder ??= new TextDecoder('utf-8', { fatal: true });
  return decoder;
}
const encoder = new TextEncoder();

// MessagePack with field names, written by the library. A `number` field holding a whole value
// goes on the wire as an integer: every reader of Courier bodies (serde, the Python SDK, this
// one) takes an integer where it expects a float.
function encodeMsgpack(value) {
  return encodeMsgpackValue(value, { useBigInt64: true, ignoreUndefined: true });
}

function encodeJson(value) {
  const text = JSON.stringify(value, (key, item) => {
    if (typeof item !== 'bigint') return item;
    if (item > BigInt(Number.MAX_SAFE_INTEGER) || item < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw new ShapeError(`field \`${key}\` is too large an integer for JSON: ${item}`);
    }
    return Number(item);
  });
  return encoder.encode(text);
}

/**
 * Decodes the consumed body as `type`, by the envelope's content type. An unknown content type
 * or a body that does not decode is a permanent failure, so it throws {@link Reject} with the
 * reason.
 *
 * @param {{ messageType: string, contentType: string, body: Uint8Array }} envelope
 * @param {MessageType} type
 * @returns {object}
 * @throws {Reject}
 */
export function decodeBody(envelope, type) {
  const kind = parseContentType(envelope.contentType);
  if (kind === undefined) {
    throw new Reject(`unsupported content type \`${envelope.contentType}\``);
  }
  try {
    return type.decode(envelope.body, kind);
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    throw new Reject(`body of ${envelope.messageType} does not decode as ${mimeOf(kind)}: ${why}`);
  }
}

// ---------------------------------------------------------------------------------------------
// The context
// ---------------------------------------------------------------------------------------------

/**
 * The host functions the SDK calls: the `courier:bus` imports, as the component bindings
 * present them.
 *
 * @typedef {object} Host
 * @property {(message: Outgoing) => string} publish
 * @property {(destination: string, message: Outgoing) => string} send
 * @property {(message: Outgoing) => string} reply
 * @property {(level: Level, text: string) => void} log
 * @property {(key: string) => string | undefined} config
 */

/** @typedef {'trace' | 'debug' | 'info' | 'warn' | 'error'} Level */

/**
 * The WIT `outgoing` record.
 *
 * @typedef {object} Outgoing
 * @property {string} messageType
 * @property {string} contentType
 * @property {Uint8Array} body
 * @property {string | undefined} correlationId
 * @property {string | undefined} sessionId
 * @property {string | undefined} replyTo
 * @property {[string, string][]} headers
 * @property {bigint | undefined} delayMs
 * @property {bigint | undefined} ttlMs
 */

/**
 * Options for one publish, send or reply. The defaults suit most messages: MessagePack, the
 * consumed message's correlation id, no session, no delay, no expiry.
 *
 * @typedef {object} SendOptions
 * @property {boolean} [json] encode the body as JSON instead of MessagePack
 * @property {string} [correlationId] instead of copying the consumed message's
 * @property {string} [sessionId] messages with the same session id are handled in order
 * @property {string} [replyTo] ask the receiver to reply to this endpoint
 * @property {Record<string, string> | Iterable<[string, string]>} [headers] free-form headers
 * @property {number | bigint} [delayMs] deliver no sooner than this after the handler succeeds
 * @property {number | bigint} [ttlMs] the message expires this long after it is sent
 */

const SEND_OPTIONS = new Set(['json', 'correlationId', 'sessionId', 'replyTo', 'headers', 'delayMs', 'ttlMs']);

function optionalString(options, key) {
  const value = options[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw new BusError('invalid', `option \`${key}\` is not a string`);
  return value;
}

function optionalMillis(options, key) {
  const value = options[key];
  if (value === undefined || value === null) return undefined;
  const valid = (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0)
    || (typeof value === 'bigint' && value >= 0n && value < 2n ** 64n);
  if (!valid) throw new BusError('invalid', `option \`${key}\` is not a whole number of milliseconds`);
  return BigInt(value);
}

function headerList(headers) {
  if (headers === undefined || headers === null) return [];
  const pairs = typeof headers[Symbol.iterator] === 'function' ? Array.from(headers) : Object.entries(headers);
  return pairs.map((pair) => {
    if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || typeof pair[1] !== 'string') {
      throw new BusError('invalid', 'option `headers` holds something other than string name/value pairs');
    }
    return [pair[0], pair[1]];
  });
}

/**
 * Builds the WIT `outgoing` record for a body of `type`.
 *
 * @param {MessageType} type
 * @param {object} body
 * @param {SendOptions} [options]
 * @returns {Outgoing}
 * @throws {BusError} `invalid` if the type is not declared, the body does not fit its shape or
 *   an option is malformed
 */
export function outgoing(type, body, options = {}) {
  if (!(type instanceof MessageType)) {
    throw new BusError('invalid', `${String(type)} is not a message type declared with message()`);
  }
  if (options === null || typeof options !== 'object') {
    throw new BusError('invalid', 'send options must be an object');
  }
  for (const key of Object.keys(options)) {
    if (!SEND_OPTIONS.has(key)) throw new BusError('invalid', `unknown send option \`${key}\``);
  }
  const kind = options.json ? 'json' : 'msgpack';
  let bytes;
  try {
    bytes = type.encode(body, kind);
  } catch (error) {
    throw new BusError('invalid', `${type.urn} does not encode: ${error.message}`);
  }
  return {
    messageType: type.urn,
    contentType: mimeOf(kind),
    body: bytes,
    correlationId: optionalString(options, 'correlationId'),
    sessionId: optionalString(options, 'sessionId'),
    replyTo: optionalString(options, 'replyTo'),
    headers: headerList(options.headers),
    delayMs: optionalMillis(options, 'delayMs'),
    ttlMs: optionalMillis(options, 'ttlMs'),
  };
}

function callBus(call) {
  try {
    return call();
  } catch (thrown) {
    throw busErrorFrom(thrown);
  }
}

/**
 * Log functions, one per level, tagged by the host with the plugin and the message.
 *
 * @typedef {object} Logger
 * @property {(text: string) => void} trace
 * @property {(text: string) => void} debug
 * @property {(text: string) => void} info
 * @property {(text: string) => void} warn
 * @property {(text: string) => void} error
 */

/**
 * @param {Host} host
 * @returns {Logger}
 */
export function logger(host) {
  const at = (level) => (text) => host.log(level, String(text));
  return Object.freeze({
    trace: at('trace'),
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
  });
}

/**
 * What a handler receives beside its body: the envelope, and the bus to publish on.
 *
 * Everything published through the context is held by the host until the handler returns;
 * if it throws (or traps), none of it is sent.
 */
export class Context {
  #envelope;
  #host;

  /**
   * @param {object} envelope the WIT `message` record, as the host delivered it
   * @param {Host} host
   */
  constructor(envelope, host) {
    this.#envelope = envelope;
    this.#host = host;
    /** Writes to the host's log: `ctx.log.info('text')`. */
    this.log = logger(host);
  }

  /** The consumed message with its whole envelope (the WIT `message` record). */
  get envelope() {
    return this.#envelope;
  }

  /** The consumed message's id. */
  get messageId() {
    return this.#envelope.id;
  }

  /** The consumed message's type URN. */
  get messageType() {
    return this.#envelope.messageType;
  }

  /** The consumed message's correlation id, or `undefined`. */
  get correlationId() {
    return this.#envelope.correlationId ?? undefined;
  }

  /** The conversation the consumed message belongs to. */
  get conversationId() {
    return this.#envelope.conversationId;
  }

  /** 1 on the first delivery, counting up on redeliveries. */
  get attempt() {
    return this.#envelope.attempt;
  }

  /** Where a reply to the consumed message should go, or `undefined`. */
  get replyTo() {
    return this.#envelope.replyTo ?? undefined;
  }

  /**
   * A header of the consumed message; the name is matched without regard to case.
   *
   * @param {string} name
   * @returns {string | undefined}
   */
  header(name) {
    const wanted = String(name).toLowerCase();
    const found = (this.#envelope.headers ?? []).find(([key]) => key.toLowerCase() === wanted);
    return found?.[1];
  }

  /**
   * A setting granted to this plugin by the host's configuration.
   *
   * @param {string} key
   * @returns {string | undefined}
   */
  config(key) {
    return this.#host.config(key) ?? undefined;
  }

  /**
   * Decodes the consumed body as `type`, by its content type. The handler's own type is
   * decoded already; this reads the body as another shape.
   *
   * @param {MessageType} type
   * @returns {object}
   * @throws {Reject} if the content type is unknown or the body does not decode
   */
  decode(type) {
    return decodeBody(this.#envelope, type);
  }

  /**
   * Publishes an event to every plugin that subscribes to its type.
   *
   * @param {MessageType} type
   * @param {object} body
   * @param {SendOptions} [options]
   * @returns {string} the id the message will carry
   * @throws {BusError}
   */
  publish(type, body, options) {
    const message = outgoing(type, body, options);
    return callBus(() => this.#host.publish(message));
  }

  /**
   * Sends a command to one endpoint (a plugin's input queue).
   *
   * @param {string} destination
   * @param {MessageType} type
   * @param {object} body
   * @param {SendOptions} [options]
   * @returns {string} the id the message will carry
   * @throws {BusError}
   */
  send(destination, type, body, options) {
    if (typeof destination !== 'string') throw new BusError('invalid', 'the destination is not a string');
    const message = outgoing(type, body, options);
    return callBus(() => this.#host.send(destination, message));
  }

  /**
   * Replies to the consumed message's `reply-to` endpoint.
   *
   * @param {MessageType} type
   * @param {object} body
   * @param {SendOptions} [options]
   * @returns {string} the id the message will carry
   * @throws {BusError}
   */
  reply(type, body, options) {
    const message = outgoing(type, body, options);
    return callBus(() => this.#host.reply(message));
  }
}

// ---------------------------------------------------------------------------------------------
// The plugin
// ---------------------------------------------------------------------------------------------

const OK = Object.freeze({ tag: 'ok', val: undefined });

function failed(thrown) {
  return { tag: 'err', val: toHandleError(thrown) };
}

/**
 * @callback Handler
 * @param {object} body the decoded body, checked against the type's shape
 * @param {Context} ctx
 * @returns {void | Promise<void>}
 */

/**
 * A plugin under construction: its name, version and one handler per message type.
 */
export class Plugin {
  #name;
  #version;
  #host;
  /** @type {Map<string, { type: MessageType, handler: Handler }>} */
  #handlers = new Map();

  /**
   * @param {{ name: string, version: string }} info the plugin's name (also its endpoint) and
   *   semver version
   * @param {Host} host
   */
  constructor(info, host) {
    const { name, version } = info ?? {};
    if (typeof name !== 'string' || name === '') throw new TypeError('a plugin needs a name');
    if (typeof version !== 'string' || version === '') throw new TypeError('a plugin needs a version');
    this.#name = name;
    this.#version = version;
    this.#host = host;
  }

  /** The plugin's name. */
  get name() {
    return this.#name;
  }

  /** The plugin's version. */
  get version() {
    return this.#version;
  }

  /**
   * Registers the handler of one message type.
   *
   * @param {MessageType} type
   * @param {Handler} handler called with the decoded body and the {@link Context}
   * @returns {this}
   */
  on(type, handler) {
    if (!(type instanceof MessageType)) {
      throw new TypeError(`plugin ${this.#name}: ${String(type)} is not a message type declared with message()`);
    }
    if (typeof handler !== 'function') {
      throw new TypeError(`plugin ${this.#name}: the handler of ${type.urn} is not a function`);
    }
    if (this.#handlers.has(type.urn)) {
      throw new Error(`plugin ${this.#name} has two handlers for ${type.urn}`);
    }
    this.#handlers.set(type.urn, { type, handler });
    return this;
  }

  /**
   * What the component exports as `handler`: `export const handler = plugin.export();`.
   *
   * @returns {{ describe: () => object, handle: (message: object) => object | Promise<object> }}
   */
  export() {
    return {
      describe: () => this.describe(),
      handle: (envelope) => this.handle(envelope),
    };
  }

  /**
   * The WIT `plugin-info`.
   *
   * @returns {{ name: string, version: string, subscriptions: string[] }}
   */
  describe() {
    return { name: this.#name, version: this.#version, subscriptions: [...this.#handlers.keys()] };
  }

  /**
   * Handles one message: finds its handler, decodes the body and calls the handler. Returns
   * the WIT `result<_, handle-error>` as `{ tag: 'ok' }` or `{ tag: 'err', val }`; a promise of
   * it when the handler is async.
   *
   * @param {object} envelope the WIT `message` record
   * @returns {object | Promise<object>}
   */
  handle(envelope) {
    const entry = this.#handlers.get(envelope.messageType);
    if (entry === undefined) {
      return {
        tag: 'err',
        val: { tag: 'reject', val: `plugin ${this.#name} has no handler for ${envelope.messageType}` },
      };
    }
    try {
      const ctx = new Context(envelope, this.#host);
      const body = decodeBody(envelope, entry.type);
      const returned = entry.handler(body, ctx);
      if (returned !== null && typeof returned === 'object' && typeof returned.then === 'function') {
        return Promise.resolve(returned).then(() => OK, failed);
      }
      return OK;
    } catch (thrown) {
      return failed(thrown);
    }
  }
}
