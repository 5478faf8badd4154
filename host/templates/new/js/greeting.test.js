import assert from 'node:assert/strict';
import { it } from 'node:test';

import { greet } from './greeting.js';

it('greets by name', () => {
  assert.deepEqual(greet({ name: 'Ada' }), { text: 'Hello, Ada!' });
});
