// The official TypeScript SDK client's OAuth provider (dynamic client registration) against the gateway:
// connect (401), register, authorize as a logged-in user, exchange the code, connect again, call one tool.
//
//   node ts_oauth_client.mjs --url URL --transport sse|http --cookie "sessionid=…; csrftoken=T" --csrf T --tool NAME
//
// The "person at the browser" is played with the login cookie: GET the authorization URL, POST "Allow" with
// the CSRF token, read the redirect. Prints one JSON line: {"ok": true, "tools": [...], "text": "...",
// "clientId": "...", "authorizationUrl": "..."} or {"ok": false, "error": "..."}.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const CALLBACK = "http://127.0.0.1:47555/callback";

function parseArgs(argv) {
  const opts = { transport: "http" };
  for (let i = 0; i < argv.length; i += 2) opts[argv[i].replace(/^--/, "")] = argv[i + 1];
  return opts;
}

class MemoryProvider {
  constructor() {
    this.client = undefined;
    this.saved = undefined;
    this.verifier = undefined;
    this.authorizationUrl = undefined;
  }
  get redirectUrl() { return CALLBACK; }
  get clientMetadata() {
    return {
      client_name: "TypeScript SDK test client",
      redirect_uris: [CALLBACK],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    };
  }
  clientInformation() { return this.client; }
  saveClientInformation(info) { this.client = info; }
  tokens() { return this.saved; }
  saveTokens(tokens) { this.saved = tokens; }
  redirectToAuthorization(url) { this.authorizationUrl = url; }
  saveCodeVerifier(verifier) { this.verifier = verifier; }
  codeVerifier() { return this.verifier; }
}

async function approve(url, cookie, csrf) {
  const page = await fetch(url, { headers: { Cookie: cookie } });
  if (page.status !== 200) throw new Error(`consent page answered ${page.status}`);
  const done = await fetch(url, {
    method: "POST",
    redirect: "manual",
    headers: { Cookie: cookie, "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ csrfmiddlewaretoken: csrf, decision: "allow" }),
  });
  const location = done.headers.get("location");
  if (done.status !== 302 || !location) throw new Error(`"Allow" answered ${done.status}`);
  const code = new URL(location).searchParams.get("code");
  if (!code) throw new Error(`no code in ${location}`);
  return code;
}

function transportFor(opts, authProvider) {
  const url = new URL(opts.url);
  return opts.transport === "sse"
    ? new SSEClientTransport(url, { authProvider })
    : new StreamableHTTPClientTransport(url, { authProvider });
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const provider = new MemoryProvider();
  let transport = transportFor(opts, provider);
  let client = new Client({ name: "mcp-gateway-interop-ts-oauth", version: "1.0.0" });
  try {
    await client.connect(transport);
    throw new Error("connected without authorization");
  } catch (error) {
    if (!(error instanceof UnauthorizedError)) throw error;
  }
  const code = await approve(provider.authorizationUrl.toString(), opts.cookie, opts.csrf);
  await transport.finishAuth(code);
  transport = transportFor(opts, provider);
  client = new Client({ name: "mcp-gateway-interop-ts-oauth", version: "1.0.0" });
  await client.connect(transport);
  try {
    const tools = (await client.listTools()).tools.map((tool) => tool.name);
    const result = await client.callTool({ name: opts.tool, arguments: {} });
    const text = result.content.filter((c) => c.type === "text").map((c) => c.text).join("");
    console.log(JSON.stringify({
      ok: true, tools, text, clientId: provider.client?.client_id, authorizationUrl: String(provider.authorizationUrl),
    }));
  } finally {
    await client.close().catch(() => {});
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.log(JSON.stringify({ ok: false, error: String(error?.stack ?? error) }));
    process.exit(1);
  },
);
