// Drive `pyro mcp serve` with the official TypeScript MCP SDK client, as MCP Inspector and
// Claude Code do: list the tools (the SDK compiles every outputSchema with ajv) and call one
// tool that has an outputSchema (its structuredContent is validated). Fails when the SDK
// printed anything (console.warn/error/log, or stderr), e.g. ajv's
// `unknown format "uint64" ignored in schema at path ...`.
//
// Usage: node ts_client.mjs [pyro mcp serve args...]
// Environment: PYRO_BIN, PYRO_TS_MCP_MODULES (scripts/ts-mcp-client.sh prints it).
import { createRequire } from "node:module";

const require = createRequire(process.env.PYRO_TS_MCP_MODULES.replace(/\/?$/, "/"));
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StdioClientTransport } = require("@modelcontextprotocol/sdk/client/stdio.js");

// Everything the SDK (and ajv inside it) prints goes through these.
const printed = [];
for (const level of ["warn", "error", "log", "info", "debug"]) {
  console[level] = (...args) => printed.push(`console.${level}: ${args.join(" ")}`);
}
const realStderrWrite = process.stderr.write.bind(process.stderr);
process.stderr.write = (chunk, ...rest) => {
  printed.push(`stderr: ${chunk}`);
  return true;
};
const say = (m) => realStderrWrite(`[ts-client] ${m}\n`);

const serveArgs = process.argv.slice(2);
const transport = new StdioClientTransport({
  command: process.env.PYRO_BIN,
  args: ["mcp", "serve", ...serveArgs],
  env: process.env,
  // The server's own stderr is not the SDK's output: keep it apart.
  stderr: "pipe",
});
const client = new Client({ name: "pyro-ts-test", version: "0.0.0" });
await client.connect(transport);
const { tools } = await client.listTools();
const names = tools.map((t) => t.name);
const sorted = [...names].sort();
if (JSON.stringify(names) !== JSON.stringify(sorted)) {
  say(`tools/list is not sorted: ${names.join(", ")}`);
  process.exit(1);
}
// A call that succeeds validates its structuredContent against the compiled outputSchema;
// where no such tool needs no VM, an error result still goes through the SDK's call path.
const target = ["workspace_list", "vm_list_environments", "workspace_summary", "vm_run"].find((n) => names.includes(n));
if (!target) {
  say(`no tool to call among ${names.join(", ")}`);
  process.exit(1);
}
const args = {
  workspace_summary: { workspace_id: "000000000000" },
  vm_run: { environment: "no-such-env:0", command: "true" },
}[target] ?? {};
const expectError = target in { workspace_summary: 1, vm_run: 1 };
const result = await client.callTool({ name: target, arguments: args });
if (expectError ? !result.isError : result.isError || !result.structuredContent) {
  say(`${target} failed: ${JSON.stringify(result)}`);
  process.exit(1);
}
await client.close();
say(`${serveArgs.join(" ")}: ${tools.length} tools, ${tools.filter((t) => t.outputSchema).length} with outputSchema; called ${target}`);
if (printed.length) {
  say(`the TypeScript SDK printed ${printed.length} line(s):`);
  for (const p of printed) realStderrWrite(p.endsWith("\n") ? p : `${p}\n`);
  process.exit(1);
}
