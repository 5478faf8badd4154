// Shipping: ships the orders the inventory endpoint sends it (`ShipOrder`) and announces each
// with `OrderShipped`. The carrier comes from config (`carrier`, default "Courier Post"); the
// tracking number is derived from the order id, so a redelivered command ships under the same
// number. A drop-in replacement for the Rust plugin of the same name.

import { message, plugin } from '../../../guest-sdk/js/src/index.js';

const OrderLine = { sku: 'string', quantity: 'integer' };

/** Command to the shipping endpoint: ship this reserved order. */
const ShipOrder = message('urn:message:Orders:ShipOrder', {
  order_id: 'string',
  customer: 'string',
  lines: [OrderLine],
});

/** An order left the warehouse; the order ends here. */
const OrderShipped = message('urn:message:Orders:OrderShipped', {
  order_id: 'string',
  customer: 'string',
  carrier: 'string',
  tracking_number: 'string',
});

const FNV_OFFSET_BASIS = 0xcbf29ce484222325n;
const FNV_PRIME = 0x100000001b3n;
const utf8 = new TextEncoder();

/**
 * FNV-1a (64-bit) of the order id's UTF-8 bytes: stable across runs and languages.
 *
 * @param {string} orderId
 * @returns {string} `TRK` and ten digits
 */
function trackingNumber(orderId) {
  let hash = FNV_OFFSET_BASIS;
  for (const byte of utf8.encode(orderId)) {
    hash = BigInt.asUintN(64, (hash ^ BigInt(byte)) * FNV_PRIME);
  }
  return `TRK${(hash % 10_000_000_000n).toString().padStart(10, '0')}`;
}

export const handler = plugin({ name: 'shipping', version: '0.1.0' })
  .on(ShipOrder, (command, ctx) => {
    const carrier = ctx.config('carrier') ?? 'Courier Post';
    const tracking = trackingNumber(command.order_id);
    ctx.log.info(
      `order ${command.order_id} packed by the JavaScript handler: ${command.lines.length} line(s), ${tracking} via ${carrier}`,
    );
    ctx.publish(OrderShipped, {
      order_id: command.order_id,
      customer: command.customer,
      carrier,
      tracking_number: tracking,
    });
  })
  .export();
