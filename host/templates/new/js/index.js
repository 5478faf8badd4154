// {{name}}: a Courier plugin. It handles the command `SayHello` and publishes the event
// `Greeted`.

import { plugin } from './sdk/guest-sdk/js/src/index.js';
import { Greeted, SayHello, greet } from './greeting.js';

export const handler = plugin({ name: '{{name}}', version: '0.1.0' })
  .on(SayHello, (command, ctx) => {
    ctx.publish(Greeted, greet(command));
  })
  .export();
