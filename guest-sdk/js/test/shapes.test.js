import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { encode as msgpackEncode } from '@msgpack/msgpack';

import { MessageType, ShapeError, message, optional } from '../src/core.js';

const Echo = message('urn:message:Conformance:Echo', {
  text: 'string',
  count: 'integer',
  tags: ['string'],
  nested: { flag: 'boolean', ratio: 'number' },
  note: optional('string'),
});

const good = () => ({ text: 'hi', count: 3, tags: ['a', 'b'], nested: { flag: true, ratio: 0.5 } });

function misfit(value) {
  try {
    Echo.conform(value);
  } catch (error) {
    assert.ok(error instanceof ShapeError, `expected a ShapeError, got ${error}`);
    return error.message;
  }
  assert.fail('the value was accepted');
}

describe('declaring a message type', () => {
  it('keeps the URN and the shape', () => {
    assert.ok(Echo instanceof MessageType);
    assert.equal(Echo.urn, 'urn:message:Conformance:Echo');
    assert.equal(String(Echo), 'urn:message:Conformance:Echo');
    assert.ok(Object.isFrozen(Echo));
  });

  it('refuses unknown type names, naming the field', () => {
    assert.throws(() => message('urn:x', { a: { b: 'str' } }), /a\.b: unknown type 'str'/);
  });

  it('refuses malformed shapes', () => {
    assert.throws(() => message('', { a: 'string' }), /needs a URN/);
    assert.throws(() => message('urn:x', 'string'), /\{map\} of fields/);
    assert.throws(() => message('urn:x', { a: [] }), /exactly one item shape/);
    assert.throws(() => message('urn:x', { a: ['string', 'integer'] }), /exactly one item shape/);
    assert.throws(() => message('urn:x', { a: 5 }), /a shape is/);
    assert.throws(() => message('urn:x', JSON.parse('{"__proto__": "string"}')), /__proto__/);
  });
});

describe('checking a body against its shape', () => {
  it('accepts a fitting body and returns only the declared fields', () => {
    const body = { ...good(), extra: 'ignored', nested: { flag: false, ratio: 2, more: 1 } };
    assert.deepEqual(Echo.conform(body), {
      text: 'hi',
      count: 3,
      tags: ['a', 'b'],
      nested: { flag: false, ratio: 2 },
      note: null,
    });
  });

  it('names a missing field, nested or not', () => {
    const { count, ...noCount } = good();
    assert.equal(misfit(noCount), 'missing field `count`');
    assert.equal(misfit({ ...good(), nested: { flag: true } }), 'missing field `nested.ratio`');
    assert.equal(misfit({ ...good(), count: undefined }), 'missing field `count`');
  });

  it('names a field of the wrong type, with its path', () => {
    assert.match(misfit({ ...good(), nested: { flag: 'yes', ratio: 1 } }), /^field `nested\.flag` is not a boolean/);
    assert.match(misfit({ ...good(), count: 1.5 }), /^field `count` is not an integer \(found a float\)/);
    assert.match(misfit({ ...good(), count: '3' }), /^field `count` is not an integer \(found a string\)/);
    assert.match(misfit({ ...good(), tags: ['a', 2] }), /^field `tags\[1\]` is not a string/);
    assert.match(misfit({ ...good(), tags: 'a' }), /^field `tags` is not a list/);
    assert.match(misfit({ ...good(), nested: [] }), /^field `nested` is not a map/);
    assert.match(misfit({ ...good(), text: null }), /^field `text` is not a string \(found null\)/);
    assert.match(misfit({ ...good(), note: 7 }), /^field `note` is not a string/);
    assert.match(misfit([1, 2]), /^the body is not a map/);
  });

  it('names fields inside lists of maps', () => {
    const Order = message('urn:x', { lines: [{ sku: 'string', quantity: 'integer' }] });
    assert.throws(
      () => Order.conform({ lines: [{ sku: 'A', quantity: 1 }, { sku: 'B' }] }),
      { message: 'missing field `lines[1].quantity`' },
    );
  });

  it('treats null and a missing optional field alike', () => {
    assert.equal(Echo.conform({ ...good(), note: null }).note, null);
    assert.equal(Echo.conform({ ...good(), note: 'n' }).note, 'n');
  });

  it('accepts integers for floats and bigints for integers', () => {
    assert.equal(Echo.conform({ ...good(), nested: { flag: true, ratio: 2 } }).nested.ratio, 2);
    assert.equal(Echo.conform({ ...good(), count: 2n ** 60n }).count, 2n ** 60n);
    assert.match(misfit({ ...good(), count: 2n ** 64n }), /is not an integer/);
  });

  it('lets `any` through unchecked', () => {
    const Loose = message('urn:x', { data: 'any' });
    assert.deepEqual(Loose.conform({ data: { a: [1, 'b'] } }), { data: { a: [1, 'b'] } });
    assert.throws(() => Loose.conform({}), { message: 'missing field `data`' });
  });
});

describe('MessagePack encoding', () => {
  it('writes maps with field names, in declared order, so any language can read them', () => {
    const Sample = message('urn:x', { order_id: 'string', amount_cents: 'integer' });
    const bytes = Sample.encode({ amount_cents: 5, order_id: 'o-1' });
    const expected = Buffer.concat([
      Buffer.from([0x82, 0xa8]), Buffer.from('order_id'), Buffer.from([0xa3]), Buffer.from('o-1'),
      Buffer.from([0xac]), Buffer.from('amount_cents'), Buffer.from([0x05]),
    ]);
    assert.deepEqual(Buffer.from(bytes), expected);
  });

  it('round-trips integers of every width through decode, none of them rounded', () => {
    const I = message('urn:x', { n: 'integer' });
    const values = [0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1,
      -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1, -(2 ** 53) + 1];
    for (const n of values) {
      assert.strictEqual(I.decode(I.encode({ n })).n, n, `n = ${n}`);
    }
    for (const n of [2n ** 53n + 1n, 2n ** 64n - 1n, -(2n ** 63n)]) {
      assert.strictEqual(I.decode(I.encode({ n })).n, n, `n = ${n}`);
    }
    const F = message('urn:x', { ratio: 'number' });
    assert.strictEqual(F.decode(F.encode({ ratio: 2 })).ratio, 2);
  });

  it('round-trips long strings, long lists, big maps and optional nils through decode', () => {
    const T = message('urn:x', { s: 'string', l: ['integer'], o: optional('string'), a: 'any' });
    const body = {
      s: 'é'.repeat(40000),
      l: Array.from({ length: 70000 }, (_, i) => i),
      o: null,
      a: Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i % 2 ? 1.5 : 'v'])),
    };
    assert.deepEqual(T.decode(T.encode(body)), body);
  });

  it('decodes what another MessagePack writer wrote', () => {
    const body = { text: 'hi', count: 3, tags: ['a'], nested: { flag: true, ratio: 1.25 }, note: 'x' };
    assert.deepEqual(Echo.decode(msgpackEncode(body)), body);
  });

  it('refuses a body that does not fit the shape', () => {
    assert.throws(() => Echo.encode({ ...good(), count: 'three' }), ShapeError);
  });

  it('keeps a bigint an `any` field holds, rather than rounding it', () => {
    const Loose = message('urn:x', { data: 'any' });
    assert.strictEqual(Loose.decode(Loose.encode({ data: 2n ** 60n })).data, 2n ** 60n);
    assert.strictEqual(Loose.decode(Loose.encode({ data: 7 })).data, 7);
  });
});

describe('JSON encoding', () => {
  it('writes the declared fields in declared order', () => {
    const text = new TextDecoder().decode(Echo.encode({ ...good(), nested: { flag: true, ratio: 2.5 } }, 'json'));
    assert.equal(text, '{"text":"hi","count":3,"tags":["a","b"],"nested":{"flag":true,"ratio":2.5},"note":null}');
  });

  it('refuses an integer too large for JSON rather than rounding it', () => {
    const N = message('urn:x', { i: 'integer' });
    assert.equal(new TextDecoder().decode(N.encode({ i: 2n ** 40n }, 'json')), '{"i":1099511627776}');
    assert.throws(() => N.encode({ i: 2n ** 63n }, 'json'), /too large an integer for JSON/);
  });

  it('round-trips through decode', () => {
    const body = { ...good(), note: 'quote " and \\ and \u2028' };
    assert.deepEqual(Echo.decode(Echo.encode(body, 'json'), 'json'), body);
  });
});
