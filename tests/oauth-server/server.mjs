// A real OAuth 2.0 / OpenID Connect server for Otobot's tests (oidc-provider),
// on loopback. Environment: PORT, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI,
// ACCESS_TTL (seconds, default 5), PRE_TOKEN_DELAY_MS (hold every token
// request before processing it, default 0), REFRESH_DELAY_MS (delay added to each
// refresh grant's answer, default 0). GET /stats counts token requests
// by grant type (and `token_refused`, `token_held`: requests the switches
// below answered instead of the server).
// GET /control?token=ok|fail|hang&hugeExpiresFor=<login> plays a provider
// outage: `fail` answers every token request 503 temporarily_unavailable,
// `hang` never answers; `hugeExpiresFor` makes refresh grants of that
// account answer expires_in = 10^18. Answers the current switches.
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const refreshDelay = Number(process.env.REFRESH_DELAY_MS || 0);
const preTokenDelay = Number(process.env.PRE_TOKEN_DELAY_MS || 0);

const provider = new Provider(issuer, {
  clients: [{
    client_id: process.env.CLIENT_ID,
    client_secret: process.env.CLIENT_SECRET,
    redirect_uris: [process.env.REDIRECT_URI],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    scope: 'openid email offline_access',
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
  cookies: { keys: ['otobot-test-cookie-key'] },
  claims: { openid: ['sub'], email: ['email'] },
  findAccount: async (ctx, id) => ({ accountId: id, claims: async () => ({ sub: id, email: `${id}@example.test` }) }),
});

const stats = {};
const control = { token: 'ok', hugeExpiresFor: '' };
provider.use(async (ctx, next) => {
  if (ctx.path === '/stats') {
    ctx.body = stats;
    return;
  }
  if (ctx.path === '/control') {
    for (const key of Object.keys(control)) {
      if (typeof ctx.query[key] === 'string') control[key] = ctx.query[key];
    }
    ctx.body = control;
    return;
  }
  if (ctx.path === '/token' && ctx.method === 'POST' && control.token !== 'ok') {
    if (control.token === 'hang') {
      stats.token_held = (stats.token_held || 0) + 1;
      // Never answers (the client's timeout ends it; released after 2 minutes).
      await new Promise((r) => setTimeout(r, 120000));
      ctx.status = 504;
      return;
    }
    stats.token_refused = (stats.token_refused || 0) + 1;
    ctx.status = 503;
    ctx.body = { error: 'temporarily_unavailable', error_description: 'test outage' };
    return;
  }
  if (preTokenDelay && ctx.path === '/token' && ctx.method === 'POST') {
    // Hold token requests before they are processed; a client that gives up
    // (or is killed) meanwhile gets nothing processed at all.
    await new Promise((r) => setTimeout(r, preTokenDelay));
    if (ctx.req.destroyed || ctx.req.socket?.destroyed) {
      ctx.status = 499;
      return;
    }
  }
  await next();
  if (ctx.oidc?.route === 'token') {
    const grant = ctx.oidc.params?.grant_type;
    stats[grant] = (stats[grant] || 0) + 1;
    // Slow answers widen the window in which two refreshes could race.
    if (grant === 'refresh_token' && refreshDelay) await new Promise((r) => setTimeout(r, refreshDelay));
    if (grant === 'refresh_token' && control.hugeExpiresFor && ctx.body?.access_token
        && ctx.oidc.entities.Account?.accountId === control.hugeExpiresFor) {
      ctx.body.expires_in = 1e18;
    }
  }
});

provider.listen(port, '127.0.0.1', () => console.log(`ready ${issuer}`));
