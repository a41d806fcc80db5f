// One MCP session with the official TypeScript SDK client: connect, list tools, call one tool.
//
//   node ts_client.mjs --url URL --transport sse|http [--header "Name: value"]... --tool NAME [--args JSON]
//
// Prints one JSON line on stdout and exits 0:
//   {"ok": true, "tools": [...], "text": "<the tool's text content>", "isError": false, "server": {...}}
// or exits 1 after printing
//   {"ok": false, "status": <HTTP status the SDK reported, or null>, "error": "..."}
// Headers go in requestInit, so the SDK sends them on every request (the SSE GET too).
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

function parseArgs(argv) {
  const opts = { headers: {}, args: {}, transport: "http" };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[++i];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    if (flag === "--url") opts.url = value;
    else if (flag === "--transport") opts.transport = value;
    else if (flag === "--tool") opts.tool = value;
    else if (flag === "--args") opts.args = JSON.parse(value);
    else if (flag === "--header") {
      const colon = value.indexOf(":");
      if (colon < 1) throw new Error(`bad header ${JSON.stringify(value)}`);
      opts.headers[value.slice(0, colon).trim()] = value.slice(colon + 1).trim();
    } else throw new Error(`unknown option ${flag}`);
  }
  if (!opts.url) throw new Error("--url is required");
  if (!["sse", "http"].includes(opts.transport)) throw new Error("--transport is sse or http");
  return opts;
}

function statusOf(error) {
  // SseError and StreamableHTTPError carry the HTTP status as `code`.
  // A failed POST on the SSE transport is a plain Error: "Error POSTing to endpoint (HTTP 403): ...".
  const code = error?.code ?? error?.event?.code;
  if (Number.isInteger(code) && code >= 100 && code < 600) return code;
  const match = /\(HTTP (\d{3})\)/.exec(String(error?.message ?? ""));
  return match ? Number(match[1]) : null;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const url = new URL(opts.url);
  const requestInit = { headers: opts.headers };
  const transport =
    opts.transport === "sse"
      ? new SSEClientTransport(url, { requestInit })
      : new StreamableHTTPClientTransport(url, { requestInit });
  const client = new Client({ name: "mcp-gateway-interop-ts", version: "1.0.0" });
  try {
    await client.connect(transport);
    const tools = (await client.listTools()).tools.map((tool) => tool.name);
    let text = null;
    let isError = false;
    if (opts.tool) {
      const result = await client.callTool({ name: opts.tool, arguments: opts.args });
      text = result.content.filter((c) => c.type === "text").map((c) => c.text).join("");
      isError = result.isError === true;
    }
    console.log(JSON.stringify({ ok: true, tools, text, isError, server: client.getServerVersion() ?? null }));
  } finally {
    await client.close().catch(() => {});
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.log(JSON.stringify({ ok: false, status: statusOf(error), error: String(error?.message ?? error) }));
    process.exit(1);
  },
);
