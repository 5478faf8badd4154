import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { decode as msgpackDecode, encode as msgpackEncode } from '@msgpack/msgpack';

import {
  BusError, Context, Plugin, Reject, Retry, busErrorFrom, message, optional, outgoing, toHandleError,
} from '../src/core.js';

const Ping = message('urn:message:Test:Ping', { text: 'string', n: 'integer' });
const Pong = message('urn:message:Test:Pong', { text: 'string', note: optional('string') });

// The component bindings throw this when a bus import returns `err(bus-error)`.
class ComponentError extends Error {
  constructor(value) {
    super(`${String(value)} (see error.payload)`);
    Object.defineProperty(this, 'payload', { value, enumerable: true });
  }
}

/** A stand-in for the `courier:bus` imports that records every call. */
function stubHost({ refuse, config = {} } = {}) {
  const calls = [];
  let next = 0;
  const bus = (name) => (...args) => {
    calls.push([name, ...args]);
    if (refuse) throw new ComponentError(refuse);
    next += 1;
    return `id-${next}`;
  };
  return {
    calls,
    publish: bus('publish'),
    send: bus('send'),
    reply: bus('reply'),
    log: (level, text) => calls.push(['log', level, text]),
    config: (key) => config[key],
  };
}

function envelope(type, body, extra = {}) {
  return {
    id: 'm-1',
    messageType: type,
    contentType: 'application/msgpack',
    body: msgpackEncode(body),
    correlationId: 'order-7',
    conversationId: 'conv-1',
    initiatorId: undefined,
    sessionId: undefined,
    replyTo: undefined,
    sourceAddress: undefined,
    sentAtMs: 0n,
    expiresAtMs: undefined,
    attempt: 2,
    headers: [['Traceparent', '00-abc'], ['x-tenant', 'acme']],
    ...extra,
  };
}

const ping = (extra) => envelope(Ping.urn, { text: 'hi', n: 1 }, extra);

function pluginWith(handler, host = stubHost()) {
  return { host, handler: new Plugin({ name: 'test', version: '1.2.3' }, host).on(Ping, handler).export() };
}

describe('error mapping', () => {
  it('passes Retry and Reject through', () => {
    assert.deepEqual(toHandleError(new Retry('later')), { tag: 'retry', val: 'later' });
    assert.deepEqual(toHandleError(new Reject('never')), { tag: 'reject', val: 'never' });
  });

  it('retries only an unavailable bus', () => {
    assert.deepEqual(toHandleError(new BusError('unavailable', 'down')), { tag: 'retry', val: 'unavailable: down' });
    assert.deepEqual(toHandleError(new BusError('denied', 'limit')), { tag: 'reject', val: 'denied: limit' });
    assert.deepEqual(toHandleError(new BusError('invalid', 'size')), { tag: 'reject', val: 'invalid: size' });
  });

  it('recognises a bus refusal as the bindings throw it', () => {
    const error = busErrorFrom(new ComponentError({ tag: 'denied', val: 'limit' }));
    assert.ok(error instanceof BusError);
    assert.equal(error.kind, 'denied');
    assert.equal(error.reason, 'limit');
    assert.equal(error.message, 'denied: limit');
    const other = new TypeError('boom');
    assert.equal(busErrorFrom(other), other);
  });

  it('retries anything else, naming the error', () => {
    assert.deepEqual(toHandleError(new Error('asked to trap')), { tag: 'retry', val: 'unhandled Error: asked to trap' });
    assert.deepEqual(toHandleError(new TypeError('x is undefined')), { tag: 'retry', val: 'unhandled TypeError: x is undefined' });
    class PaymentGatewayDown extends Error {}
    assert.deepEqual(toHandleError(new PaymentGatewayDown('502')), { tag: 'retry', val: 'unhandled PaymentGatewayDown: 502' });
    assert.deepEqual(toHandleError(new Error('')), { tag: 'retry', val: 'unhandled Error' });
    assert.deepEqual(toHandleError('just a string'), { tag: 'retry', val: 'unhandled string: just a string' });
    assert.deepEqual(toHandleError({ code: 7 }), { tag: 'retry', val: 'unhandled object: {"code":7}' });
    assert.deepEqual(toHandleError(null), { tag: 'retry', val: 'unhandled null: null' });
  });
});

describe('the plugin', () => {
  it('describes itself', () => {
    const plugin = new Plugin({ name: 'test', version: '1.2.3' }, stubHost()).on(Ping, () => {}).on(Pong, () => {});
    assert.deepEqual(plugin.export().describe(), {
      name: 'test',
      version: '1.2.3',
      subscriptions: ['urn:message:Test:Ping', 'urn:message:Test:Pong'],
    });
  });

  it('refuses a second handler for a type, and things that are not handlers', () => {
    const plugin = new Plugin({ name: 'test', version: '1.0.0' }, stubHost()).on(Ping, () => {});
    assert.throws(() => plugin.on(Ping, () => {}), /two handlers for urn:message:Test:Ping/);
    assert.throws(() => plugin.on('urn:message:Test:Pong', () => {}), /not a message type/);
    assert.throws(() => plugin.on(Pong, 'nope'), /not a function/);
    assert.throws(() => new Plugin({ name: '', version: '1' }, stubHost()), /needs a name/);
    assert.throws(() => new Plugin({ name: 'x' }, stubHost()), /needs a version/);
  });

  it('hands the decoded body to the handler and returns ok', () => {
    let seen;
    const { handler } = pluginWith((body) => { seen = body; });
    assert.deepEqual(handler.handle(ping()), { tag: 'ok', val: undefined });
    assert.deepEqual(seen, { text: 'hi', n: 1 });
  });

  it('rejects a message type it has no handler for', () => {
    const { handler } = pluginWith(() => {});
    assert.deepEqual(handler.handle(envelope('urn:message:Test:Other', {})), {
      tag: 'err',
      val: { tag: 'reject', val: 'plugin test has no handler for urn:message:Test:Other' },
    });
  });

  it('rejects a body that does not decode, without calling the handler', () => {
    let called = false;
    const { handler } = pluginWith(() => { called = true; });
    assert.deepEqual(handler.handle(envelope(Ping.urn, { text: 'hi' })), {
      tag: 'err',
      val: { tag: 'reject', val: 'body of urn:message:Test:Ping does not decode as application/msgpack: missing field `n`' },
    });
    assert.deepEqual(handler.handle(ping({ contentType: 'text/csv' })), {
      tag: 'err',
      val: { tag: 'reject', val: 'unsupported content type `text/csv`' },
    });
    assert.equal(called, false);
  });

  it('maps what the handler throws', () => {
    const cases = [
      [() => { throw new Retry('busy'); }, { tag: 'retry', val: 'busy' }],
      [() => { throw new Reject('bad'); }, { tag: 'reject', val: 'bad' }],
      [() => { throw new RangeError('oops'); }, { tag: 'retry', val: 'unhandled RangeError: oops' }],
    ];
    for (const [fn, expected] of cases) {
      assert.deepEqual(pluginWith(fn).handler.handle(ping()), { tag: 'err', val: expected });
    }
  });

  it('maps a bus refusal left uncaught', () => {
    const publishing = (_, ctx) => { ctx.publish(Pong, { text: 'x' }); };
    const denied = pluginWith(publishing, stubHost({ refuse: { tag: 'denied', val: 'limit' } }));
    assert.deepEqual(denied.handler.handle(ping()), { tag: 'err', val: { tag: 'reject', val: 'denied: limit' } });
    const down = pluginWith(publishing, stubHost({ refuse: { tag: 'unavailable', val: 'down' } }));
    assert.deepEqual(down.handler.handle(ping()), { tag: 'err', val: { tag: 'retry', val: 'unavailable: down' } });
  });

  it('lets a handler catch a bus refusal', () => {
    let kind;
    const { handler } = pluginWith((_, ctx) => {
      try {
        ctx.publish(Pong, { text: 'x' });
      } catch (error) {
        if (!(error instanceof BusError)) throw error;
        kind = error.kind;
      }
    }, stubHost({ refuse: { tag: 'invalid', val: 'too big' } }));
    assert.deepEqual(handler.handle(ping()), { tag: 'ok', val: undefined });
    assert.equal(kind, 'invalid');
  });

  it('awaits an async handler', async () => {
    const ok = pluginWith(async () => { await null; });
    assert.deepEqual(await ok.handler.handle(ping()), { tag: 'ok', val: undefined });
    const failing = pluginWith(async () => { await null; throw new Reject('later, and no'); });
    assert.deepEqual(await failing.handler.handle(ping()), { tag: 'err', val: { tag: 'reject', val: 'later, and no' } });
  });
});

describe('the context', () => {
  function contextOf(extra, options) {
    const host = stubHost(options);
    return { host, ctx: new Context(ping(extra), host) };
  }

  it('exposes the envelope', () => {
    const { ctx } = contextOf({ replyTo: 'client' });
    assert.equal(ctx.messageId, 'm-1');
    assert.equal(ctx.messageType, Ping.urn);
    assert.equal(ctx.correlationId, 'order-7');
    assert.equal(ctx.conversationId, 'conv-1');
    assert.equal(ctx.attempt, 2);
    assert.equal(ctx.replyTo, 'client');
    assert.equal(ctx.envelope.sentAtMs, 0n);
    assert.equal(contextOf({ correlationId: undefined }).ctx.correlationId, undefined);
    assert.equal(contextOf().ctx.replyTo, undefined);
  });

  it('finds headers whatever their case', () => {
    const { ctx } = contextOf();
    assert.equal(ctx.header('traceparent'), '00-abc');
    assert.equal(ctx.header('X-Tenant'), 'acme');
    assert.equal(ctx.header('missing'), undefined);
  });

  it('reads config and writes the log', () => {
    const { ctx, host } = contextOf({}, { config: { carrier: 'Courier Post' } });
    assert.equal(ctx.config('carrier'), 'Courier Post');
    assert.equal(ctx.config('nope'), undefined);
    ctx.log.trace('t');
    ctx.log.debug('d');
    ctx.log.info('i');
    ctx.log.warn('w');
    ctx.log.error(42);
    assert.deepEqual(host.calls, [
      ['log', 'trace', 't'], ['log', 'debug', 'd'], ['log', 'info', 'i'], ['log', 'warn', 'w'], ['log', 'error', '42'],
    ]);
  });

  it('publishes, sends and replies, returning the ids', () => {
    const { ctx, host } = contextOf();
    assert.equal(ctx.publish(Pong, { text: 'a' }), 'id-1');
    assert.equal(ctx.send('sink', Pong, { text: 'b' }, { json: true }), 'id-2');
    assert.equal(ctx.reply(Pong, { text: 'c' }), 'id-3');
    const [publish, send, reply] = host.calls;
    assert.equal(publish[0], 'publish');
    assert.equal(publish[1].messageType, Pong.urn);
    assert.equal(publish[1].contentType, 'application/msgpack');
    assert.deepEqual(msgpackDecode(publish[1].body), { text: 'a', note: null });
    assert.deepEqual(send.slice(0, 2), ['send', 'sink']);
    assert.equal(send[2].contentType, 'application/json');
    assert.equal(new TextDecoder().decode(send[2].body), '{"text":"b","note":null}');
    assert.equal(reply[0], 'reply');
  });

  it('builds the outgoing record from the options', () => {
    const record = outgoing(Pong, { text: 'a' }, {
      correlationId: 'c', sessionId: 's', replyTo: 'r', headers: { a: '1', b: '2' }, delayMs: 1500, ttlMs: 60000n,
    });
    assert.deepEqual({ ...record, body: undefined }, {
      messageType: Pong.urn,
      contentType: 'application/msgpack',
      body: undefined,
      correlationId: 'c',
      sessionId: 's',
      replyTo: 'r',
      headers: [['a', '1'], ['b', '2']],
      delayMs: 1500n,
      ttlMs: 60000n,
    });
    assert.deepEqual(outgoing(Pong, { text: 'a' }, { headers: [['k', 'v'], ['k', 'w']] }).headers, [['k', 'v'], ['k', 'w']]);
    assert.deepEqual(outgoing(Pong, { text: 'a' }, { headers: new Map([['k', 'v']]) }).headers, [['k', 'v']]);
    const plain = outgoing(Pong, { text: 'a' });
    assert.equal(plain.correlationId, undefined);
    assert.equal(plain.delayMs, undefined);
    assert.deepEqual(plain.headers, []);
  });

  it('refuses malformed messages as invalid, naming what is wrong', () => {
    const invalid = (fn, pattern) => assert.throws(fn, (error) => error instanceof BusError && error.kind === 'invalid' && pattern.test(error.reason));
    invalid(() => outgoing(Pong, { text: 5 }), /^urn:message:Test:Pong does not encode: field `text` is not a string/);
    invalid(() => outgoing(Pong, {}), /does not encode: missing field `text`/);
    invalid(() => outgoing('urn:message:Test:Pong', { text: 'a' }), /not a message type/);
    invalid(() => outgoing(Pong, { text: 'a' }, { corelationId: 'x' }), /unknown send option `corelationId`/);
    invalid(() => outgoing(Pong, { text: 'a' }, { delayMs: -1 }), /`delayMs`/);
    invalid(() => outgoing(Pong, { text: 'a' }, { ttlMs: 1.5 }), /`ttlMs`/);
    invalid(() => outgoing(Pong, { text: 'a' }, { sessionId: 7 }), /`sessionId` is not a string/);
    invalid(() => outgoing(Pong, { text: 'a' }, { headers: { a: 1 } }), /`headers`/);
    const { ctx, host } = contextOf();
    invalid(() => ctx.publish(Pong, { text: 1 }), /field `text`/);
    assert.equal(host.calls.length, 0);
  });

  it('decodes the consumed body as another type', () => {
    const Loose = message('urn:message:Test:Loose', { text: 'string' });
    assert.deepEqual(contextOf().ctx.decode(Loose), { text: 'hi' });
    const Counted = message('urn:message:Test:Counted', { count: 'integer' });
    assert.throws(
      () => contextOf().ctx.decode(Counted),
      (error) => error instanceof Reject && /missing field `count`/.test(error.reason),
    );
  });
});
