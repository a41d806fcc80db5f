// One exchange with the TypeScript SDK v2 client (@modelcontextprotocol/client) at protocol 2026-07-28:
// connect (server/discover, no initialize), list tools, call one tool.
//
//   node ts2_client.mjs --url URL [--header "Name: value"]... [--mode auto|pin] --tool NAME [--args JSON]
//
// --mode auto (the default here; the SDK's own default is "legacy", which never probes) probes with
// server/discover and falls back to initialize on anything but definitive 2026-07-28 evidence;
// --mode pin requires 2026-07-28 and fails otherwise.
// Prints one JSON line on stdout and exits 0:
//   {"ok": true, "tools": [...], "text": "...", "isError": false, "era": "modern", "protocolVersion": "2026-07-28",
//    "methods": [<every JSON-RPC method the client POSTed, in order>], "statuses": [<every HTTP status it got>]}
// or exits 1 after printing {"ok": false, "status": <HTTP status or null>, "error": "...", "methods": [...]}.
// Every request goes through a wrapped fetch that records the JSON-RPC method of each body, so the caller can
// check that no "initialize" was sent.
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";

const MODERN = "2026-07-28";

function parseArgs(argv) {
  const opts = { headers: {}, args: {}, mode: "auto" };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[++i];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    if (flag === "--url") opts.url = value;
    else if (flag === "--tool") opts.tool = value;
    else if (flag === "--args") opts.args = JSON.parse(value);
    else if (flag === "--mode") opts.mode = value;
    else if (flag === "--header") {
      const colon = value.indexOf(":");
      if (colon < 1) throw new Error(`bad header ${JSON.stringify(value)}`);
      opts.headers[value.slice(0, colon).trim()] = value.slice(colon + 1).trim();
    } else throw new Error(`unknown option ${flag}`);
  }
  if (!opts.url) throw new Error("--url is required");
  if (!["auto", "pin"].includes(opts.mode)) throw new Error("--mode is auto or pin");
  return opts;
}

const methods = [];
const statuses = [];

async function recordingFetch(input, init) {
  const body = init?.body;
  if (typeof body === "string") {
    try {
      const parsed = JSON.parse(body);
      for (const message of Array.isArray(parsed) ? parsed : [parsed]) {
        if (message && typeof message.method === "string") methods.push(message.method);
      }
    } catch {
      methods.push("<unparsable body>");
    }
  } else if (body != null) {
    methods.push("<non-string body>");
  }
  const response = await fetch(input, init);
  statuses.push(response.status);
  return response;
}

function statusOf(error) {
  const code = error?.code ?? error?.status ?? error?.cause?.status;
  if (Number.isInteger(code) && code >= 100 && code < 600) return code;
  const match = /\(HTTP (\d{3})\)/.exec(String(error?.message ?? ""));
  return match ? Number(match[1]) : null;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const transport = new StreamableHTTPClientTransport(new URL(opts.url), {
    requestInit: { headers: opts.headers },
    fetch: recordingFetch,
  });
  const mode = opts.mode === "pin" ? { pin: MODERN } : "auto";
  const client = new Client({ name: "mcp-gateway-interop-ts2", version: "1.0.0" }, { versionNegotiation: { mode } });
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
    console.log(
      JSON.stringify({
        ok: true,
        tools,
        text,
        isError,
        era: client.getProtocolEra() ?? null,
        protocolVersion: client.getNegotiatedProtocolVersion() ?? null,
        server: client.getServerVersion() ?? null,
        methods,
        statuses,
      }),
    );
  } finally {
    await client.close().catch(() => {});
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.log(
      JSON.stringify({ ok: false, status: statusOf(error), error: String(error?.message ?? error), methods, statuses }),
    );
    process.exit(1);
  },
);
