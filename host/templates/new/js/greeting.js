// The messages of {{name}}, and what its handler decides, kept apart from the bus so that a
// unit test can check it. (`core.js` is the part of the SDK that runs outside a component.)

import { message } from './sdk/guest-sdk/js/src/core.js';

/** A command: greet someone. */
export const SayHello = message('urn:message:{{Namespace}}:SayHello', { name: 'string' });

/** An event: someone was greeted. */
export const Greeted = message('urn:message:{{Namespace}}:Greeted', { text: 'string' });

/**
 * @param {{ name: string }} command
 * @returns {{ text: string }}
 */
export function greet(command) {
  return { text: `Hello, ${command.name}!` };
}
