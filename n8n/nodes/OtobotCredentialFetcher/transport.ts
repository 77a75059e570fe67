import type {
	IDataObject,
	IExecuteFunctions,
	IHttpRequestOptions,
	IN8nHttpFullResponse,
	INode,
	JsonObject,
} from 'n8n-workflow';
import { NodeApiError, NodeOperationError } from 'n8n-workflow';

export const CREDENTIAL_TYPE = 'otobotApi';

/** The fields of the "Otobot API" credential. */
export interface OtobotApiCredentials {
	apiUrl: string;
	internalToken: string;
}

/** A successful (2xx) answer, or Otobot's 404 `connection_not_found`, which the node turns into data. */
export interface OtobotResponse {
	statusCode: number;
	body: IDataObject;
}

export const CONNECTION_NOT_FOUND = 'connection_not_found';
/** The header a credential fetch carries the user's grant in. */
export const GRANT_HEADER = 'x-otobot-grant';
/** A connection whose grant died (a failed refresh): reconnect the account. Also data. */
export const CONNECTION_EXPIRED = 'connection_expired';

const REQUEST_TIMEOUT_MS = 30_000;

/** Reads the API URL from the credential: trimmed, without trailing slashes, http(s) only. */
export async function getApiUrl(this: IExecuteFunctions, itemIndex: number): Promise<string> {
	const { apiUrl } = await this.getCredentials<OtobotApiCredentials>(CREDENTIAL_TYPE, itemIndex);
	const url = String(apiUrl ?? '')
		.trim()
		.replace(/\/+$/, '');
	if (!/^https?:\/\/[^/\s]+/i.test(url)) {
		throw new NodeOperationError(
			this.getNode(),
			'The API URL of the "Otobot API" credential must be an http(s) URL',
			{ itemIndex, description: 'For example http://api-internal:3001' },
		);
	}
	return url;
}

/**
 * GET an internal Otobot route through n8n's authenticated request helper (which adds the
 * `x-internal-token` header). Returns 2xx answers and 404 `connection_not_found`; throws a
 * NodeApiError naming the problem for anything else.
 */
export async function otobotApiRequest(
	this: IExecuteFunctions,
	apiUrl: string,
	path: string,
	qs: IDataObject,
	itemIndex: number,
	{ grant }: { grant?: string } = {},
): Promise<OtobotResponse> {
	const headers: IDataObject = { Accept: 'application/json' };
	if (grant !== undefined) headers[GRANT_HEADER] = grant;
	const options: IHttpRequestOptions = {
		method: 'GET',
		url: `${apiUrl}${path}`,
		qs,
		headers,
		json: true,
		timeout: REQUEST_TIMEOUT_MS,
		// SECURITY: a redirect would carry the token header to another address; report it instead.
		disableFollowRedirect: true,
		// Statuses are mapped below, so every failure gets a message that names its cause.
		returnFullResponse: true,
		ignoreHttpStatusErrors: true,
	};

	let response: IN8nHttpFullResponse;
	try {
		response = await this.helpers.httpRequestWithAuthentication.call(
			this,
			CREDENTIAL_TYPE,
			options,
		);
	} catch (error) {
		throw requestFailure(this.getNode(), error, apiUrl, itemIndex);
	}

	const { statusCode } = response;
	const body = asObject(response.body);
	if (body && statusCode >= 200 && statusCode < 300) return { statusCode, body };
	if (
		body &&
		statusCode === 404 &&
		(body.code === CONNECTION_NOT_FOUND || body.code === CONNECTION_EXPIRED)
	)
		return { statusCode, body };
	throw httpFailure(this.getNode(), statusCode, response.headers ?? {}, body, itemIndex, {
		grantSent: grant !== undefined,
	});
}

/**
 * Builds the error for a non-success HTTP answer.
 * SECURITY: only Otobot's own `error`, `code` and `requestId` fields are kept (the API never
 * puts a secret in them); the request, which carries the token header, is never attached.
 */
function httpFailure(
	node: INode,
	statusCode: number,
	headers: IDataObject,
	body: IDataObject | undefined,
	itemIndex: number,
	{ grantSent }: { grantSent?: boolean } = {},
): NodeApiError {
	const serverMessage = stringField(body, 'error');
	const code = stringField(body, 'code');
	const requestId = stringField(body, 'requestId') ?? stringField(headers, 'x-request-id');
	const detail = serverMessage ? `: ${serverMessage}` : '';

	let message: string;
	let hint: string | undefined;
	if (statusCode >= 200 && statusCode < 300) {
		message = `Unexpected response from Otobot (${statusCode}): the body is not a JSON object`;
		hint =
			'Check that the API URL of the "Otobot API" credential points at the Otobot internal API.';
	} else if (statusCode >= 300 && statusCode < 400) {
		const location = stringField(headers, 'location');
		message = `Otobot API answered with a redirect (${statusCode})${location ? ` to ${location}` : ''}`;
		hint =
			'Set the API URL of the "Otobot API" credential to the address the API answers on directly: redirects are not followed, so that the token is never sent elsewhere.';
	} else if (statusCode === 400) {
		message = `Otobot rejected the request as invalid (400)${detail}`;
		hint = 'User and connection IDs must be UUIDs and the service a known service code.';
	} else if (statusCode === 401) {
		message = 'Otobot rejected the internal token (401)';
		hint =
			'The Internal Token of the "Otobot API" credential must equal N8N_INTERNAL_TOKEN (or a token in INTERNAL_TOKENS) of the Otobot API.';
	} else if (statusCode === 403 && code === 'grant_required') {
		// Said in the message itself: with Continue On Fail, the message is all the item keeps.
		message = `Otobot needs the user's grant to release credentials (403 grant_required)${
			grantSent === false ? ': the Grant parameter is empty' : ''
		}. Set Grant to the otobotGrant of the run ({{ $json.body.otobotGrant }} after a Webhook trigger) or, in a scheduled workflow, to a standing grant the user created in Otobot`;
		hint = serverMessage;
	} else if (statusCode === 403 && code === 'grant_invalid') {
		const reason = stringField(body, 'reason') ?? 'unknown';
		message = `Otobot refused the grant (403 grant_invalid, ${reason})${detail}`;
		hint =
			'A run grant is valid for one user and a few minutes (RUN_GRANT_TTL_SECONDS); a standing grant for the services, user and time the user chose, until revoked.';
	} else if (statusCode === 403) {
		message = `Otobot refused access (403)${detail}`;
	} else if (statusCode === 404 && !code) {
		message = 'Otobot API route not found (404)';
		hint =
			'Check that the API URL of the "Otobot API" credential points at the Otobot internal API.';
	} else if (statusCode === 429) {
		const retryAfter = parseRetryAfter(headers['retry-after']);
		message =
			retryAfter === undefined
				? 'Rate limited by Otobot (429), retry later'
				: `Rate limited by Otobot, retry after ${retryAfter} s`;
		hint =
			'Otobot limits each caller (RATE_LIMIT_CALLER_PER_MINUTE) and each caller and user (RATE_LIMIT_USER_PER_MINUTE). Spread the calls, or enable "Retry On Fail" with a wait.';
	} else if (statusCode === 503) {
		message = `Otobot API is unavailable (503)${detail}`;
		hint = 'Its database or key ring is not usable: check GET /health and the API logs.';
	} else if (statusCode >= 500) {
		message = `Otobot API failed (${statusCode})${detail}`;
		hint = 'See the Otobot API logs for this request ID.';
	} else {
		message = `Otobot answered ${statusCode}${detail}`;
	}

	const description = [hint, requestId && `Otobot request ID: ${requestId}.`]
		.filter(Boolean)
		.join(' ');
	const errorResponse: JsonObject = { httpCode: String(statusCode) };
	if (code) errorResponse.code = code;
	const reason = stringField(body, 'reason');
	if (reason) errorResponse.reason = reason;
	if (serverMessage) errorResponse.error = serverMessage;
	if (requestId) errorResponse.requestId = requestId;
	return new NodeApiError(node, errorResponse, {
		message,
		description: description || undefined,
		httpCode: String(statusCode),
		itemIndex,
	});
}

const NETWORK_REASONS: Record<string, string> = {
	ECONNREFUSED: 'connection refused',
	ECONNRESET: 'connection reset',
	ECONNABORTED: 'timed out',
	ETIMEDOUT: 'timed out',
	ENOTFOUND: 'host name not found',
	EAI_AGAIN: 'host name not found',
	EHOSTUNREACH: 'host unreachable',
	ENETUNREACH: 'network unreachable',
};

/**
 * Builds the error for a request that threw: usually the API could not be reached.
 * SECURITY: the thrown error holds the request options (token header included), so it is
 * neither wrapped nor attached; only its status or its network error code is read.
 */
function requestFailure(node: INode, error: unknown, apiUrl: string, itemIndex: number) {
	const err = asObject(error) ?? {};
	const cause = asObject(err.cause) ?? {};
	// Hosts that ignore `ignoreHttpStatusErrors` throw on HTTP errors: map those statuses the same way.
	const response = asObject(err.response) ?? asObject(cause.response);
	if (response && typeof response.status === 'number') {
		return httpFailure(
			node,
			response.status,
			asObject(response.headers) ?? {},
			asObject(response.data),
			itemIndex,
		);
	}

	const code = stringField(err, 'code') ?? stringField(cause, 'code');
	const reason = code && (NETWORK_REASONS[code] ?? code.toLowerCase());
	return new NodeApiError(
		node,
		{ networkError: reason ?? 'request failed' },
		{
			message: `Could not reach the Otobot API at ${apiUrl}${reason ? ` (${reason})` : ''}`,
			description:
				'Check the API URL of the "Otobot API" credential. When n8n runs in Docker, use the Compose service name (http://api-internal:3001), not localhost, and put both containers on the same network.',
			itemIndex,
		},
	);
}

/** Seconds to wait from a Retry-After header (delay in seconds, or an HTTP date). */
export function parseRetryAfter(value: unknown, now = Date.now()): number | undefined {
	const raw = Array.isArray(value) ? value[0] : value;
	if (typeof raw === 'number' && Number.isFinite(raw)) return Math.max(0, Math.ceil(raw));
	if (typeof raw !== 'string' || raw.trim() === '') return undefined;
	const text = raw.trim();
	if (/^\d+$/.test(text)) return Number(text);
	const date = Date.parse(text);
	return Number.isNaN(date) ? undefined : Math.max(0, Math.ceil((date - now) / 1000));
}

function asObject(value: unknown): IDataObject | undefined {
	return value !== null && typeof value === 'object' && !Array.isArray(value)
		? (value as IDataObject)
		: undefined;
}

function stringField(object: IDataObject | undefined, key: string): string | undefined {
	const value = object?.[key];
	return typeof value === 'string' && value !== '' ? value : undefined;
}
