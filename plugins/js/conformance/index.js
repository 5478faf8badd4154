// The JavaScript reference plugin of the conformance suite: every behaviour of
// docs/conformance.md, as the Rust and Python reference plugins have it.

import { message, optional, plugin, Reject, Retry } from '../../../guest-sdk/js/src/index.js';

const LANGUAGE = 'js';

const Nested = { flag: 'boolean', ratio: 'number' };

const Echo = message('urn:message:Conformance:Echo', {
  text: 'string',
  count: 'integer',
  tags: ['string'],
  nested: Nested,
});

const Echoed = message('urn:message:Conformance:Echoed', {
  text: 'string',
  count: 'integer',
  tags: ['string'],
  nested: Nested,
  language: 'string',
  greeting: optional('string'),
});

const Recorded = message('urn:message:Conformance:Recorded', { text: 'string' });
const EchoReply = message('urn:message:Conformance:EchoReply', { text: 'string' });
const Fail = message('urn:message:Conformance:Fail', { mode: 'string' });
const Leaked = message('urn:message:Conformance:Leaked', { mode: 'string' });
const Sandbox = message('urn:message:Conformance:Sandbox', { path: 'string', address: 'string' });
const SandboxReport = message('urn:message:Conformance:SandboxReport', {
  file: 'string',
  socket: 'string',
});

function echo(body, ctx) {
  ctx.log.info(`echo ${body.text}`);
  ctx.publish(Echoed, {
    text: body.text,
    count: body.count + 1,
    tags: [...body.tags].reverse(),
    nested: { flag: !body.nested.flag, ratio: body.nested.ratio * 2 },
    language: LANGUAGE,
    greeting: ctx.config('greeting') ?? null,
  });
  ctx.send('conformance-sink', Recorded, { text: body.text }, { json: true });
  if (ctx.replyTo !== undefined) {
    ctx.reply(EchoReply, { text: body.text });
  }
}

// Async on purpose: the suite then checks that the SDK waits for a handler's promise and
// reports how it settled.
async function fail(body, ctx) {
  ctx.publish(Leaked, { mode: body.mode });
  await Promise.resolve();
  switch (body.mode) {
    case 'retry':
      throw new Retry('asked to retry');
    case 'reject':
      throw new Reject('asked to reject');
    case 'trap':
      // JavaScript's unplanned failure: an exception the handler did not plan for.
      throw new Error('asked to trap');
    case 'spin': {
      let counter = 0;
      for (;;) counter = (counter + 1) | 0;
    }
    case 'hog': {
      const blocks = [];
      for (;;) blocks.push(new Uint8Array(1 << 20).fill(1));
    }
    default:
  }
}

// The engine this component runs on (StarlingMonkey) has no file API and no socket API at all:
// no `fs`, no raw TCP, so neither attempt can even be made and both report why. The nearest
// thing to a socket would be `fetch`, but components are built without HTTP support (the SDK's
// build disables the `http` feature, so the component imports nothing the host lacks): the
// `fetch` global still exists, yet calling it aborts the instance instead of failing, so the
// handler does not call it.
function sandbox(body, ctx) {
  ctx.publish(SandboxReport, {
    file: 'error: StarlingMonkey has no file API',
    socket: 'error: StarlingMonkey has no socket API (and fetch is compiled out)',
  });
}

export const handler = plugin({ name: 'conformance', version: '1.0.0' })
  .on(Echo, echo)
  .on(Fail, fail)
  .on(Sandbox, sandbox)
  .export();
