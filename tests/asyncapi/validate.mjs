// Validates an AsyncAPI document with the official parser; prints its diagnostics as JSON lines
// and exits 1 if any is an error (severity 0). Usage: node validate.mjs <document.json>
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(process.argv[2], "utf8"));
for (const d of diagnostics) {
  console.log(JSON.stringify({ severity: d.severity, code: d.code, message: d.message, path: d.path }));
}
const errors = diagnostics.filter((d) => d.severity === 0);
console.log(JSON.stringify({ parsed: Boolean(document), errors: errors.length, diagnostics: diagnostics.length }));
process.exit(document && errors.length === 0 ? 0 : 1);
