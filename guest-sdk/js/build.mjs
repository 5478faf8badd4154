#!/usr/bin/env node
// Builds a JavaScript handler into a Courier plugin component:
//
//   node guest-sdk/js/build.mjs <entry.js> <out.wasm> [--wit <dir>]
//
// The entry module and everything it imports (the SDK, @msgpack/msgpack) are bundled into one
// ES module with esbuild, leaving the `courier:bus/*` imports to the component; the bundle is
// then compiled into a component of the world `plugin` with componentize-js. The WIT defaults to
// the repository's `wit/` directory. Relative paths are taken from the current directory.

import { mkdtemp, mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { componentize } from '@bytecodealliance/componentize-js';
import { build } from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const DEFAULT_WIT = resolve(here, '../../wit');
const USAGE = 'usage: node guest-sdk/js/build.mjs <entry.js> <out.wasm> [--wit <dir>]';

function parseArgs(argv) {
  const positional = [];
  let wit = DEFAULT_WIT;
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === '--wit') {
      if (argv[i + 1] === undefined) throw new Error(`--wit needs a directory\n${USAGE}`);
      wit = resolve(argv[(i += 1)]);
    } else if (arg.startsWith('--wit=')) {
      wit = resolve(arg.slice('--wit='.length));
    } else if (arg === '-h' || arg === '--help') {
      console.log(USAGE);
      process.exit(0);
    } else if (arg.startsWith('-')) {
      throw new Error(`unknown option ${arg}\n${USAGE}`);
    } else {
      positional.push(arg);
    }
  }
  if (positional.length !== 2) throw new Error(USAGE);
  return { entry: resolve(positional[0]), out: resolve(positional[1]), wit };
}

async function bundle(entry) {
  const result = await build({
    entryPoints: [entry],
    // Paths in the bundle's comments are relative to the repository, whatever the current
    // directory, so the bundle does not depend on where the build was started.
    absWorkingDir: resolve(here, '../..'),
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'neutral',
    mainFields: ['module', 'main'],
    target: 'es2022',
    external: ['courier:bus/*'],
    // Keeps class and function names, which the SDK reports for unplanned exceptions.
    keepNames: true,
    logLevel: 'warning',
  });
  return result.outputFiles[0].text;
}

async function main() {
  const { entry, out, wit } = parseArgs(process.argv.slice(2));
  await stat(entry).catch(() => {
    throw new Error(`no such entry module: ${entry}`);
  });
  await stat(wit).catch(() => {
    throw new Error(`no such WIT directory: ${wit}`);
  });

  const started = performance.now();
  const source = await bundle(entry);

  // componentize-js reads the module from a file; its name shows in stack traces.
  const work = await mkdtemp(join(tmpdir(), 'courier-js-'));
  try {
    const stem = basename(out, extname(out)) || 'plugin';
    const sourcePath = join(work, `${stem}.js`);
    await writeFile(sourcePath, source);
    // componentize-js maps the current directory into the engine when the module lies below
    // it; building from the work directory keeps that mapping small and independent of where
    // the build was started.
    const previous = process.cwd();
    process.chdir(work);
    const { component } = await componentize({
      sourcePath,
      witPath: wit,
      worldName: 'plugin',
      // A handler talks to the bus only through `courier:bus`; leave out the HTTP client and
      // server so the component imports nothing the host does not provide.
      disableFeatures: ['http', 'fetch-event'],
    }).finally(() => process.chdir(previous));
    await mkdir(dirname(out), { recursive: true });
    await writeFile(out, component);
  } finally {
    await rm(work, { recursive: true, force: true });
  }

  const { size } = await stat(out);
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  console.log(`${out} (${(size / (1024 * 1024)).toFixed(1)} MiB, ${size} bytes) built in ${seconds} s`);
}

main().catch((error) => {
  console.error(`build failed: ${error instanceof Error ? error.message : error}`);
  process.exit(1);
});
