/**
 * Write Courier message handlers in JavaScript.
 *
 * A handler is a function from a typed message body to nothing: it returns to accept the
 * message, or throws. Declare the message types with {@link message}, register one handler per
 * type on a {@link plugin}, and export the result as the component's `handler`:
 *
 * ```js
 * import { message, plugin, Reject } from '@courier/sdk';
 *
 * const OrderPlaced = message('urn:message:Orders:OrderPlaced', {
 *   order_id: 'string',
 *   amount_cents: 'integer',
 * });
 * const PaymentProcessed = message('urn:message:Orders:PaymentProcessed', { order_id: 'string' });
 *
 * export const handler = plugin({ name: 'payment', version: '1.0.0' })
 *   .on(OrderPlaced, (order, ctx) => {
 *     if (order.amount_cents <= 0) throw new Reject('nothing to charge');
 *     ctx.publish(PaymentProcessed, { order_id: order.order_id });
 *   })
 *   .export();
 * ```
 *
 * Bodies are MessagePack by default (maps with field names, so any language can read them);
 * `{ json: true }` publishes JSON instead. Incoming bodies are decoded according to their
 * content type and checked against the declared shape; one that does not fit is rejected with
 * the reason.
 *
 * This module imports the `courier:bus` interfaces, so it only loads inside a component; the
 * logic lives in `core.js`, which does not.
 *
 * @module
 */

import { publish, send, reply } from 'courier:bus/bus@0.1.0';
import { log } from 'courier:bus/log@0.1.0';
import { get } from 'courier:bus/config@0.1.0';

import { Plugin } from './core.js';

export {
  BusError,
  Context,
  JSON_MIME,
  MSGPACK,
  MessageType,
  Optional,
  Plugin,
  Reject,
  Retry,
  ShapeError,
  message,
  optional,
  parseContentType,
} from './core.js';

/**
 * The `courier:bus` imports, as the SDK calls them.
 *
 * @type {import('./core.js').Host}
 */
const host = Object.freeze({
  publish: (message) => publish(message),
  send: (destination, message) => send(destination, message),
  reply: (message) => reply(message),
  log: (level, text) => log(level, text),
  config: (key) => get(key),
});

/**
 * Starts a plugin: register handlers with `.on(Type, handler)`, then `export const handler =
 * ....export()`.
 *
 * @param {{ name: string, version: string }} info the plugin's name (also the name of its
 *   input queue) and its semver version
 * @returns {Plugin}
 */
export function plugin(info) {
  return new Plugin(info, host);
}
