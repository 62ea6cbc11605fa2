/** `npm run docs`: regenerates the reference docs from the code (errors, metrics, config keys). */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { renderConfigDoc } from '../src/config/render-doc.js';
import { renderErrorsDoc } from '../src/errors.js';
import { renderMetricsDoc } from '../src/metrics/catalog.js';

const docs = fileURLToPath(new URL('../../docs/', import.meta.url));
export const GENERATED: Record<string, () => string> = {
  'ERRORS.md': renderErrorsDoc,
  'METRICS.md': renderMetricsDoc,
  'CONFIG.md': renderConfigDoc,
};

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const [name, render] of Object.entries(GENERATED)) {
    writeFileSync(`${docs}${name}`, render());
    process.stdout.write(`wrote docs/${name}\n`);
  }
}
