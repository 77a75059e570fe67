// bench/refresh's OAuth 2.0 / OpenID Connect server: oidc-provider configured
// like tests/oauth-server/server.mjs (same client, PKCE, rotating refresh
// tokens, short access tokens, openid scope so every refresh also signs an
// ID token), plus what a 10,000-grant bench needs:
//
//   POST /bench/mint?n=N&account=ID  creates N grants and one refresh token
//                                     each, straight through the provider's
//                                     models; answers the token values, one
//                                     per line (text/plain).
//   GET  /stats                       token requests by grant_type,
//                                     refresh_token answers by HTTP status
//                                     (`refresh_token_status`), and when the
//                                     first and last were answered
//                                     (`refresh_token_times`, ms; requests
//                                     with an x-bench-check header are not
//                                     timed; POST /bench/reset-times resets).
//   GET  /bench/cpu                   this process's CPU time (µs) and RSS.
//
// The storage is an unbounded in-memory store: oidc-provider's default
// memory adapter is an LRU of 1,000 entries, which would silently drop most
// of 10,000 grants (→ invalid_grant "refresh token not found").
//
// Environment: PORT, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, ACCESS_TTL
// (seconds, default 5), OIDC_PROVIDER_DIR (default
// ../../tests/oauth-server/node_modules/oidc-provider, relative to this file).
import { pathToFileURL } from 'node:url';
import path from 'node:path';

const here = path.dirname(new URL(import.meta.url).pathname);
const dir = process.env.OIDC_PROVIDER_DIR
  || path.join(here, '../../tests/oauth-server/node_modules/oidc-provider');
const { default: Provider } = await import(pathToFileURL(path.join(dir, 'lib/index.js')).href);
const { default: MemoryAdapter } = await import(pathToFileURL(path.join(dir, 'lib/adapters/memory_adapter.js')).href);

// The interface of oidc-provider's LRU (get, set with maxAge, delete), no size bound.
class Store {
  #m = new Map();

  get(key) {
    const e = this.#m.get(key);
    if (!e) return undefined;
    if (e.expiry !== undefined && e.expiry <= Date.now()) {
      this.#m.delete(key);
      return undefined;
    }
    return e.value;
  }

  set(key, value, { maxAge } = {}) {
    const expiry = typeof maxAge === 'number' && Number.isFinite(maxAge) ? Date.now() + maxAge : undefined;
    this.#m.set(key, { value, expiry });
    return this;
  }

  delete(key) {
    return this.#m.delete(key);
  }

  get size() {
    return this.#m.size;
  }
}
const store = new Store();

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const CLIENT_ID = process.env.CLIENT_ID;
const SCOPE = 'openid email offline_access';

const provider = new Provider(issuer, {
  adapter: (name) => new MemoryAdapter(name, store, 0),
  clients: [{
    client_id: CLIENT_ID,
    client_secret: process.env.CLIENT_SECRET,
    redirect_uris: [process.env.REDIRECT_URI],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    scope: SCOPE,
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  pkce: { required: () => true },
  rotateRefreshToken: true,
  clockTolerance: 0,
  ttl: {
    AccessToken: Number(process.env.ACCESS_TTL || 5),
    AuthorizationCode: 60, Interaction: 600, Session: 600, Grant: 3600, RefreshToken: 3600, IdToken: 300,
  },
  features: {
    devInteractions: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    userinfo: { enabled: true },
  },
  cookies: { keys: ['otobot-bench-cookie-key'] },
  claims: { openid: ['sub'], email: ['email'] },
  findAccount: async (ctx, id) => ({ accountId: id, claims: async () => ({ sub: id, email: `${id}@example.test` }) }),
});

async function mint(n, account) {
  const client = await provider.Client.find(CLIENT_ID);
  const values = [];
  for (let i = 0; i < n; i += 1) {
    const accountId = `${account}-${i}`;
    const grant = new provider.Grant({ accountId, clientId: CLIENT_ID });
    grant.addOIDCScope(SCOPE);
    const grantId = await grant.save();
    const rt = new provider.RefreshToken({
      accountId, client, grantId, scope: SCOPE, gty: 'authorization_code', authTime: Math.floor(Date.now() / 1000),
    });
    values.push(await rt.save());
  }
  return values;
}

const stats = {};
const refreshStatus = {};
// Wall clock (ms since the epoch) of the first and last answered refresh grant.
const refreshTimes = { first: null, last: null };
provider.use(async (ctx, next) => {
  if (ctx.path === '/stats' && ctx.method === 'GET') {
    ctx.body = {
      ...stats, refresh_token_status: refreshStatus, refresh_token_times: refreshTimes, stored_entries: store.size,
    };
    return;
  }
  if (ctx.path === '/bench/cpu' && ctx.method === 'GET') {
    const { user, system } = process.cpuUsage();
    ctx.body = { user_us: user, system_us: system, rss: process.memoryUsage().rss };
    return;
  }
  if (ctx.path === '/bench/reset-times' && ctx.method === 'POST') {
    refreshTimes.first = null;
    refreshTimes.last = null;
    ctx.status = 204;
    return;
  }
  if (ctx.path === '/bench/mint' && ctx.method === 'POST') {
    const n = Number(ctx.query.n || 1);
    if (!Number.isInteger(n) || n < 1 || n > 1_000_000) {
      ctx.status = 400;
      ctx.body = 'n must be 1 to 1000000\n';
      return;
    }
    const values = await mint(n, String(ctx.query.account || 'bench'));
    ctx.type = 'text/plain';
    ctx.body = `${values.join('\n')}\n`;
    return;
  }
  await next();
  if (ctx.oidc?.route === 'token') {
    const grant = ctx.oidc.params?.grant_type;
    stats[grant] = (stats[grant] || 0) + 1;
    if (grant === 'refresh_token') {
      refreshStatus[ctx.status] = (refreshStatus[ctx.status] || 0) + 1;
      const now = Date.now();
      if (!ctx.get('x-bench-check')) {
        refreshTimes.first ??= now;
        refreshTimes.last = now;
      }
    }
  }
});

provider.listen(port, '127.0.0.1', () => console.log(`ready ${issuer}`));
