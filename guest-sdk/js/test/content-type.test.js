import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { encode as msgpackEncode } from '@msgpack/msgpack';

import { JSON_MIME, MSGPACK, Reject, decodeBody, message, mimeOf, parseContentType } from '../src/core.js';

const Sample = message('urn:message:Test:Sample', { order_id: 'string', amount_cents: 'integer' });
const utf8 = (text) => new TextEncoder().encode(text);

function envelope(contentType, body) {
  return { messageType: 'urn:message:Test:Sample', contentType, body };
}

function rejection(fn) {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof Reject, `expected a Reject, got ${error}`);
    return error.reason;
  }
  assert.fail('nothing was thrown');
}

describe('content types', () => {
  it('recognises the MessagePack and JSON MIME types', () => {
    assert.equal(parseContentType('application/msgpack'), 'msgpack');
    assert.equal(parseContentType('application/x-msgpack'), 'msgpack');
    assert.equal(parseContentType('application/vnd.msgpack'), 'msgpack');
    assert.equal(parseContentType('application/json'), 'json');
  });

  it('ignores parameters, case and spaces', () => {
    assert.equal(parseContentType('Application/JSON; charset=utf-8'), 'json');
    assert.equal(parseContentType('  application/msgpack ;foo=bar'), 'msgpack');
  });

  it('knows nothing else', () => {
    assert.equal(parseContentType('text/plain'), undefined);
    assert.equal(parseContentType(''), undefined);
    assert.equal(parseContentType('application/jsonx'), undefined);
  });

  it('names the MIME type of each encoding', () => {
    assert.equal(mimeOf('msgpack'), MSGPACK);
    assert.equal(mimeOf('json'), JSON_MIME);
    assert.equal(MSGPACK, 'application/msgpack');
    assert.equal(JSON_MIME, 'application/json');
  });
});

describe('decoding a consumed body', () => {
  it('picks the decoder by content type', () => {
    const body = { order_id: 'o-1', amount_cents: 1250 };
    assert.deepEqual(decodeBody(envelope('application/x-msgpack', msgpackEncode(body)), Sample), body);
    assert.deepEqual(decodeBody(envelope('application/json; charset=utf-8', utf8(JSON.stringify(body))), Sample), body);
  });

  it('rejects an unknown content type', () => {
    assert.equal(
      rejection(() => decodeBody(envelope('text/plain', utf8('{}')), Sample)),
      'unsupported content type `text/plain`',
    );
  });

  it('rejects a body that is not valid in its encoding', () => {
    const reason = rejection(() => decodeBody(envelope('application/json', utf8('{"order_id":')), Sample));
    assert.match(reason, /^body of urn:message:Test:Sample does not decode as application\/json: /);
    const packed = rejection(() => decodeBody(envelope('application/msgpack', new Uint8Array([0xc1])), Sample));
    assert.match(packed, /^body of urn:message:Test:Sample does not decode as application\/msgpack: /);
    const utf = rejection(() => decodeBody(envelope('application/json', new Uint8Array([0x22, 0xff, 0x22])), Sample));
    assert.match(utf, /does not decode as application\/json/);
  });

  it('rejects a body that does not fit the shape, naming the field', () => {
    const reason = rejection(() => decodeBody(envelope('application/msgpack', msgpackEncode({ order_id: 'o-1' })), Sample));
    assert.equal(
      reason,
      'body of urn:message:Test:Sample does not decode as application/msgpack: missing field `amount_cents`',
    );
  });
});
