/**
 * The `zipline` CLI: run | check | schema | shm | version | help.
 *
 * Exit codes: 0 success · 1 invalid configuration · 2 usage error · 3 could not start
 * (an address in use, a permission) · 70 internal error.
 */
import { Command, CommanderError } from 'commander';
import { isZiplineError } from '../errors.js';
import { ZIPLINE_VERSION } from '../version.js';
import { describeConfig } from './describe.js';
import { EXIT, reportInvalidConfig } from './exit.js';
import { runCommand } from './run.js';
import type { ShmCreateOptions } from './shm.js';

async function check(file: string): Promise<number> {
  // loaded here, not statically: `run` must not load the schema library (load-isolated.ts)
  const { loadConfigFile } = await import('../config/load.js');
  const r = loadConfigFile(file);
  if (!r.ok) return reportInvalidConfig(file, r.issues);
  const { tlsFileProblems } = await import('./check-files.js');
  const files = tlsFileProblems(r.config);
  if (files.length > 0) {
    const n = files.length;
    process.stderr.write(
      `${file}: ZL_TLS_CONFIG: ${n} problem${n === 1 ? '' : 's'} with the TLS files it names\n`,
    );
    for (const line of files) process.stderr.write(`  ${line}\n`);
    return EXIT.config;
  }
  process.stdout.write(`${file}: ok\n${describeConfig(r.config)}`);
  return EXIT.ok;
}

/** `zipline run FILE` as `zipline run -c FILE` (as `nginx -c` users and `caddy run` users both try); not both. */
function configFile(file: string | undefined, opts: { config: string }, cmd: Command): string {
  if (file === undefined) return opts.config;
  if (cmd.getOptionValueSource('config') === 'cli' && opts.config !== file) {
    cmd.error(`error: two config files given (${file} and -c ${opts.config}); name one`);
  }
  return file;
}

export async function main(argv: string[]): Promise<number> {
  const program = new Command('zipline')
    .description('A low-latency proxy and tunnel suite for Node.js')
    .version(ZIPLINE_VERSION, '-v, --version', 'print the version')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  let code: number = EXIT.ok;
  program
    .command('run')
    .description(
      'run everything the config declares (SIGHUP reloads, SIGTERM/SIGINT drain and exit, SIGUSR2 upgrades in place)',
    )
    .requiredOption('-c, --config <file>', 'config file (YAML)', 'zipline.yaml')
    .argument('[file]', 'the config file, as -c')
    .action(async (file: string | undefined, opts: { config: string }, cmd: Command) => {
      code = await runCommand(configFile(file, opts, cmd));
    });
  program
    .command('check')
    .description('validate a config and print what it would run; exit 1 listing every problem')
    .requiredOption('-c, --config <file>', 'config file (YAML)', 'zipline.yaml')
    .argument('[file]', 'the config file, as -c')
    .action(async (file: string | undefined, opts: { config: string }, cmd: Command) => {
      code = await check(configFile(file, opts, cmd));
    });
  program
    .command('schema')
    .description("print the config's JSON Schema, for editors (yaml-language-server: $schema=FILE)")
    .action(async () => {
      const { configJsonSchema } = await import('../config/json-schema.js');
      process.stdout.write(`${JSON.stringify(configJsonSchema(), null, 2)}\n`);
    });
  program
    .command('shm <action> <name>')
    .description('shared-memory segments: create (if missing) | inspect | rm NAME (e.g. /zipline-telemetry)')
    .option('--capacity <size>', 'snapshot capacity, for create', '64KiB')
    .option('--slots <n>', 'slots per ring (a power of two), for create', '1024')
    .option('--slot-size <size>', 'bytes per ring slot, for create', '4KiB')
    .option('--mode <octal>', 'permissions, for create', '0600')
    .action(async (action: string, name: string, opts: ShmCreateOptions) => {
      // loaded here: `run` loads the shm code only when its config has bridges (runtime.ts)
      const { shmCommand } = await import('./shm.js');
      code = shmCommand(action, name, opts);
    });
  program
    .command('version')
    .description('print the version')
    .action(() => {
      process.stdout.write(`zipline ${ZIPLINE_VERSION} (node ${process.version})\n`);
    });
  program
    .command('help [command]')
    .description('show help for a command')
    .action((name?: string) => {
      const sub = program.commands.find((c) => c.name() === name);
      (sub ?? program).outputHelp();
    });
  try {
    await program.parseAsync(argv, { from: 'user' });
    return code;
  } catch (err) {
    if (err instanceof CommanderError) {
      return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    if (isZiplineError(err)) {
      process.stderr.write(`zipline: ${err.code}: ${err.message}\n`);
      return err.code === 'ZL_CONFIG_READ' ? EXIT.config : EXIT.start;
    }
    process.stderr.write(`zipline: internal error: ${(err as Error).stack ?? String(err)}\n`);
    return EXIT.internal;
  }
}

const code = await main(process.argv.slice(2));
// `run` keeps the process alive through its servers and exits from its signal handlers
if (code !== EXIT.ok) process.exit(code);
