// Validate AsyncAPI documents with the official parser (@asyncapi/parser).
//
//   node tools/asyncapi/validate.mjs <file> [<file> ...]
//
// Prints every diagnostic. Exits 1 if any has severity "error" (or a file cannot be
// read or parsed), 2 on bad usage, 0 otherwise: warnings, information and hints are
// printed but allowed.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { DiagnosticSeverity, Parser } from '@asyncapi/parser';

const require = createRequire(import.meta.url);
const parserVersion = require('@asyncapi/parser/package.json').version;

const SEVERITY = {
  [DiagnosticSeverity.Error]: 'error',
  [DiagnosticSeverity.Warning]: 'warning',
  [DiagnosticSeverity.Information]: 'info',
  [DiagnosticSeverity.Hint]: 'hint',
};

function where(diagnostic) {
  const at = diagnostic.path && diagnostic.path.length ? diagnostic.path.join('.') : '(root)';
  const line = diagnostic.range ? `:${diagnostic.range.start.line + 1}` : '';
  return `${at}${line}`;
}

async function validate(parser, file) {
  let text;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    console.error(`${file}: error: cannot read: ${err.message}`);
    return false;
  }
  const { document, diagnostics } = await parser.parse(text, { source: path.resolve(file) });
  let errors = 0;
  for (const d of diagnostics) {
    const severity = SEVERITY[d.severity] ?? String(d.severity);
    if (d.severity === DiagnosticSeverity.Error) errors += 1;
    const out = d.severity === DiagnosticSeverity.Error ? console.error : console.warn;
    out(`${file}: ${severity}: [${d.code}] ${d.message} at ${where(d)}`);
  }
  if (document === undefined && errors === 0) {
    console.error(`${file}: error: the parser returned no document`);
    errors += 1;
  }
  const warnings = diagnostics.length - errors;
  const verdict = errors ? 'INVALID' : 'valid';
  console.log(
    `${file}: ${verdict} (AsyncAPI ${document?.version() ?? '?'}, @asyncapi/parser ` +
      `${parserVersion}; ${errors} error(s), ${warnings} other diagnostic(s))`,
  );
  return errors === 0;
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node validate.mjs <asyncapi-file> [<asyncapi-file> ...]');
  process.exit(2);
}
const parser = new Parser();
let ok = true;
for (const file of files) {
  ok = (await validate(parser, file)) && ok;
}
process.exit(ok ? 0 : 1);
