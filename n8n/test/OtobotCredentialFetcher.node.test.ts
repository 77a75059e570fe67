import type { NodeError } from 'n8n-workflow';
import { NodeApiError, NodeOperationError } from 'n8n-workflow';
import { describe, expect, it } from 'vitest';

import { OtobotApi } from '../credentials/OtobotApi.credentials';
import { OtobotCredentialFetcher } from '../nodes/OtobotCredentialFetcher/OtobotCredentialFetcher.node';
import { parseRetryAfter } from '../nodes/OtobotCredentialFetcher/transport';
import {
	API_URL,
	CONNECTION_ID,
	fail,
	mockContext,
	ok,
	OTHER_USER_ID,
	CANARY,
	USER_ID,
} from './helpers';

const fetcher = new OtobotCredentialFetcher();
const run = (context: ReturnType<typeof mockContext>['context']) => fetcher.execute.call(context);

const credentialsBody = {
	connectionId: CONNECTION_ID,
	service: 'notion',
	hasCredentials: true,
	credentials: { apiKey: 'secret_AbCdEf', tokenType: 'Bearer' },
	metadata: {
		accountIdentifier: 'Acme workspace',
		label: 'Work',
		tokenExpired: false,
		expiresAt: null,
		scopes: [],
	},
};

const notFoundBody = {
	error: 'Connection not found',
	code: 'connection_not_found',
	hasCredentials: false,
	requestId: 'req-404',
};

const getCredentials = { operation: 'getUserCredentials', userId: USER_ID, service: 'notion' };

/** Runs the node expecting a failure, and returns the error. */
async function runError(context: ReturnType<typeof mockContext>['context']): Promise<NodeError> {
	const error = await run(context).then(
		() => undefined,
		(thrown: NodeError) => thrown,
	);
	if (!error) throw new Error('the node did not fail');
	return error;
}

/** Everything an error exposes to the UI or a log. */
const exposed = (error: NodeError) =>
	JSON.stringify({ message: error.message, description: error.description, error });

describe('Get User Credentials', () => {
	it("returns Otobot's credentials object unchanged, requested by user and service", async () => {
		const { context, request, requestOptions } = mockContext({
			params: getCredentials,
			answers: [ok(credentialsBody)],
		});

		const [output] = await run(context);

		expect(output).toEqual([{ json: credentialsBody, pairedItem: { item: 0 } }]);
		expect(request).toHaveBeenCalledTimes(1);
		expect(request.mock.calls[0][0]).toBe('otobotApi');
		expect(requestOptions()).toMatchObject({
			method: 'GET',
			url: `${API_URL}/api/internal/user/${USER_ID}/credentials/notion`,
			qs: {},
			json: true,
		});
	});

	it('leaves the x-internal-token header to the credential, never setting it itself', async () => {
		const { context, requestOptions } = mockContext({
			params: getCredentials,
			answers: [ok(credentialsBody)],
		});

		await run(context);

		expect(JSON.stringify(requestOptions())).not.toContain(CANARY);
		expect(Object.keys(requestOptions().headers ?? {})).not.toContain('x-internal-token');
	});

	it('drops trailing slashes from the API URL', async () => {
		const { context, requestOptions } = mockContext({
			params: getCredentials,
			answers: [ok(credentialsBody)],
			apiUrl: ' https://otobot.example.com/// ',
		});

		await run(context);

		expect(requestOptions().url).toBe(
			`https://otobot.example.com/api/internal/user/${USER_ID}/credentials/notion`,
		);
	});

	it('sends a chosen connection ID as the connectionId query parameter', async () => {
		const { context, requestOptions } = mockContext({
			params: { ...getCredentials, options: { connectionId: ` ${CONNECTION_ID} ` } },
			answers: [ok(credentialsBody)],
		});

		await run(context);

		expect(requestOptions().qs).toEqual({ connectionId: CONNECTION_ID });
	});

	it('sends a label as the label query parameter', async () => {
		const { context, requestOptions } = mockContext({
			params: { ...getCredentials, options: { label: 'Work account' } },
			answers: [ok(credentialsBody)],
		});

		await run(context);

		expect(requestOptions().qs).toEqual({ label: 'Work account' });
	});

	it('refuses a connection ID and a label together without calling the API', async () => {
		const { context, request } = mockContext({
			params: { ...getCredentials, options: { connectionId: CONNECTION_ID, label: 'Work' } },
		});

		const error = await runError(context);

		expect(error).toBeInstanceOf(NodeOperationError);
		expect(error.message).toBe('Set either Connection ID or Label, not both');
		expect(request).not.toHaveBeenCalled();
	});

	it('refuses a connection ID that is not a UUID without calling the API', async () => {
		const { context, request } = mockContext({
			params: { ...getCredentials, options: { connectionId: 'abc-123' } },
		});

		const error = await runError(context);

		expect(error.message).toBe('Connection ID must be a UUID');
		expect(request).not.toHaveBeenCalled();
	});

	it('uses the free-text service code when "Other" is chosen', async () => {
		const { context, requestOptions } = mockContext({
			params: { ...getCredentials, service: '__custom', customService: ' HubSpot ' },
			answers: [ok(credentialsBody)],
		});

		await run(context);

		expect(requestOptions().url).toBe(
			`${API_URL}/api/internal/user/${USER_ID}/credentials/hubspot`,
		);
	});

	it('accepts a service code coming from an expression', async () => {
		const { context, requestOptions } = mockContext({
			params: { ...getCredentials, service: 'Google ' },
			answers: [ok(credentialsBody)],
		});

		await run(context);

		expect(requestOptions().url).toBe(`${API_URL}/api/internal/user/${USER_ID}/credentials/google`);
	});

	it('refuses a service code with characters outside the code alphabet', async () => {
		const { context, request } = mockContext({
			params: { ...getCredentials, service: '../connections' },
		});

		const error = await runError(context);

		expect(error.message).toBe('Service must be a service code');
		expect(request).not.toHaveBeenCalled();
	});

	it('turns 404 connection_not_found into an item with hasCredentials false', async () => {
		const { context } = mockContext({
			params: { ...getCredentials, options: { label: 'Work' } },
			answers: [fail(404, notFoundBody)],
		});

		const [output] = await run(context);

		expect(output).toEqual([
			{
				json: {
					hasCredentials: false,
					error: 'Connection not found',
					code: 'connection_not_found',
					userId: USER_ID,
					service: 'notion',
					label: 'Work',
					requestId: 'req-404',
				},
				pairedItem: { item: 0 },
			},
		]);
	});

	it('turns 404 connection_expired into an item flagged tokenExpired, never credentials', async () => {
		const expiredBody = {
			error: 'Connection expired: the account must be reconnected',
			code: 'connection_expired',
			hasCredentials: false,
			connectionId: 'c0ffee00-0000-4000-8000-000000000001',
			service: 'notion',
			metadata: { tokenExpired: true, status: 'expired' },
			requestId: 'req-exp',
		};
		const { context } = mockContext({ params: getCredentials, answers: [fail(404, expiredBody)] });

		const [output] = await run(context);

		expect(output[0].json).toMatchObject({
			hasCredentials: false,
			code: 'connection_expired',
			tokenExpired: true,
			connectionId: 'c0ffee00-0000-4000-8000-000000000001',
		});
		expect(output[0].json.credentials).toBeUndefined();
	});

	it('refuses a user ID that is not a UUID without calling the API', async () => {
		const { context, request } = mockContext({
			params: { ...getCredentials, userId: 'user-42' },
		});

		const error = await runError(context);

		expect(error).toBeInstanceOf(NodeOperationError);
		expect(error.message).toBe('User ID must be a UUID');
		expect(error.context.itemIndex).toBe(0);
		expect(request).not.toHaveBeenCalled();
	});

	it('refuses an empty user ID without calling the API', async () => {
		const { context, request } = mockContext({ params: { ...getCredentials, userId: '  ' } });

		const error = await runError(context);

		expect(error.message).toBe('User ID is required');
		expect(request).not.toHaveBeenCalled();
	});
});

describe('errors', () => {
	it('raises a NodeApiError naming the token on 401', async () => {
		const { context } = mockContext({
			params: getCredentials,
			answers: [
				fail(401, { error: 'Invalid internal token', code: 'unauthorized', requestId: 'req-401' }),
			],
		});

		const error = await runError(context);

		expect(error).toBeInstanceOf(NodeApiError);
		expect(error.message).toBe('Otobot rejected the internal token (401)');
		expect((error as NodeApiError).httpCode).toBe('401');
		expect(error.description).toContain('N8N_INTERNAL_TOKEN');
		expect(error.description).toContain('req-401');
		expect(error.context.itemIndex).toBe(0);
	});

	it('with Continue On Fail, turns a 401 into an error item and goes on with the next items', async () => {
		const { context, request } = mockContext({
			params: [getCredentials, { ...getCredentials, userId: OTHER_USER_ID }],
			answers: [
				fail(401, { error: 'Invalid internal token', code: 'unauthorized' }),
				ok(credentialsBody),
			],
			continueOnFail: true,
		});

		const [output] = await run(context);

		expect(request).toHaveBeenCalledTimes(2);
		expect(output).toEqual([
			{ json: { error: 'Otobot rejected the internal token (401)' }, pairedItem: { item: 0 } },
			{ json: credentialsBody, pairedItem: { item: 1 } },
		]);
	});

	it('with Continue On Fail, an invalid user ID marks only its own item', async () => {
		const { context, request, requestOptions } = mockContext({
			params: [
				{ ...getCredentials, userId: 'not-a-uuid' },
				{ ...getCredentials, userId: OTHER_USER_ID },
			],
			answers: [ok(credentialsBody)],
			continueOnFail: true,
		});

		const [output] = await run(context);

		expect(request).toHaveBeenCalledTimes(1);
		expect(requestOptions().url).toContain(OTHER_USER_ID);
		expect(output).toEqual([
			{ json: { error: 'User ID must be a UUID' }, pairedItem: { item: 0 } },
			{ json: credentialsBody, pairedItem: { item: 1 } },
		]);
	});

	it('fails on the first bad item without Continue On Fail, naming its index', async () => {
		const { context } = mockContext({
			params: [getCredentials, { ...getCredentials, userId: 'nope' }],
			answers: [ok(credentialsBody)],
		});

		const error = await runError(context);

		expect(error.context.itemIndex).toBe(1);
	});

	it('reports 429 with the Retry-After delay', async () => {
		const { context } = mockContext({
			params: getCredentials,
			answers: [
				fail(429, { error: 'Too many requests', code: 'rate_limited' }, { 'retry-after': '30' }),
			],
		});

		const error = await runError(context);

		expect(error).toBeInstanceOf(NodeApiError);
		expect(error.message).toBe('Rate limited by Otobot, retry after 30 s');
	});

	it('reports 429 without Retry-After', async () => {
		const { context } = mockContext({
			params: getCredentials,
			answers: [fail(429, { error: 'Too many requests', code: 'rate_limited' })],
		});

		expect((await runError(context)).message).toBe('Rate limited by Otobot (429), retry later');
	});

	it('reports 400 with the reason Otobot gives', async () => {
		const { context } = mockContext({
			params: getCredentials,
			answers: [fail(400, { error: 'Unknown service', code: 'unknown_service' })],
		});

		expect((await runError(context)).message).toBe(
			'Otobot rejected the request as invalid (400): Unknown service',
		);
	});

	it("reports 503 and 500 with Otobot's request ID", async () => {
		const unavailable = mockContext({
			params: getCredentials,
			answers: [
				fail(503, { error: 'Service unavailable', code: 'unavailable', requestId: 'req-503' }),
			],
		});
		const failed = mockContext({
			params: getCredentials,
			answers: [
				fail(500, { error: 'Internal error', code: 'internal' }, { 'x-request-id': 'req-500' }),
			],
		});

		const unavailableError = await runError(unavailable.context);
		const failedError = await runError(failed.context);

		expect(unavailableError.message).toBe('Otobot API is unavailable (503): Service unavailable');
		expect(unavailableError.description).toContain('req-503');
		expect(failedError.message).toBe('Otobot API failed (500): Internal error');
		expect(failedError.description).toContain('req-500');
	});

	it('reports a 404 without an Otobot error code as a wrong API URL', async () => {
		const { context } = mockContext({
			params: getCredentials,
			answers: [fail(404, '<html>Not Found</html>')],
		});

		const error = await runError(context);

		expect(error.message).toBe('Otobot API route not found (404)');
		expect(error.description).toContain('API URL');
	});

	it('reports a redirect instead of following it with the token', async () => {
		const { context, requestOptions } = mockContext({
			params: getCredentials,
			answers: [fail(301, '', { location: 'https://elsewhere.example.com/' })],
		});

		const error = await runError(context);

		expect(requestOptions().disableFollowRedirect).toBe(true);
		expect(error.message).toBe(
			'Otobot API answered with a redirect (301) to https://elsewhere.example.com/',
		);
	});

	it('refuses a success answer whose body is not JSON', async () => {
		const { context } = mockContext({
			params: getCredentials,
			answers: [ok('<html>a login page</html>')],
		});

		expect((await runError(context)).message).toBe(
			'Unexpected response from Otobot (200): the body is not a JSON object',
		);
	});

	it('reports an unreachable API without exposing the request and its token', async () => {
		// What n8n's helper throws on a network error: the request, token header included, travels with it.
		const cause = Object.assign(new Error('connect ECONNREFUSED 10.0.0.5:3001'), {
			code: 'ECONNREFUSED',
			config: { headers: { 'x-internal-token': CANARY } },
		});
		const thrown = Object.assign(new Error('The service refused the connection'), { cause });
		const { context } = mockContext({ params: getCredentials, answers: [thrown] });

		const error = await runError(context);

		expect(error).toBeInstanceOf(NodeApiError);
		expect(error.message).toBe(`Could not reach the Otobot API at ${API_URL} (connection refused)`);
		expect(error.description).toContain('api-internal');
		expect(exposed(error)).not.toContain(CANARY);
	});

	it('maps an HTTP error thrown by the helper like an answered one, without the request', async () => {
		const thrown = Object.assign(new Error('Request failed with status code 401'), {
			response: { status: 401, headers: {}, data: { error: 'Invalid internal token' } },
			config: { headers: { 'x-internal-token': CANARY } },
		});
		const { context } = mockContext({ params: getCredentials, answers: [thrown] });

		const error = await runError(context);

		expect(error.message).toBe('Otobot rejected the internal token (401)');
		expect(exposed(error)).not.toContain(CANARY);
	});

	it('refuses an API URL that is not http(s) before any request', async () => {
		const { context, request } = mockContext({
			params: getCredentials,
			apiUrl: 'api-internal:3001',
		});

		const error = await runError(context);

		expect(error.message).toBe('The API URL of the "Otobot API" credential must be an http(s) URL');
		expect(request).not.toHaveBeenCalled();
	});
});

describe('grants', () => {
	const GRANT = 'otg_grant-value-that-must-not-leak-0000000000000';
	const grantRequired = {
		error:
			"A grant is required to read this user's credentials: send the otobotGrant that Otobot's trigger passed to the workflow in the x-otobot-grant header",
		code: 'grant_required',
		hasCredentials: false,
		requestId: 'req-403',
	};

	it('sends the Grant parameter in the x-otobot-grant header, trimmed', async () => {
		const { context, requestOptions } = mockContext({
			params: { ...getCredentials, grant: `  ${GRANT} ` },
			answers: [ok(credentialsBody)],
		});

		await run(context);

		expect(requestOptions().headers).toEqual({
			Accept: 'application/json',
			'x-otobot-grant': GRANT,
		});
	});

	it('sends no grant header when the Grant parameter is empty', async () => {
		const { context, requestOptions } = mockContext({
			params: { ...getCredentials, grant: '' },
			answers: [ok(credentialsBody)],
		});

		await run(context);

		expect(requestOptions().headers).toEqual({ Accept: 'application/json' });
	});

	it('names the empty Grant parameter and how to pass one on 403 grant_required', async () => {
		const { context } = mockContext({
			params: { ...getCredentials, grant: '' },
			answers: [fail(403, grantRequired)],
		});

		const error = await runError(context);

		expect(error).toBeInstanceOf(NodeApiError);
		expect(error.message).toContain('403 grant_required');
		expect(error.message).toContain('the Grant parameter is empty');
		expect(error.message).toContain('{{ $json.body.otobotGrant }}');
		expect(error.message).toContain('standing grant');
		expect(error.description).toContain('x-otobot-grant');
		expect(error.description).toContain('req-403');
	});

	it('with Continue On Fail, a refused fetch is an error item whose message says what to do', async () => {
		const { context } = mockContext({
			params: { ...getCredentials, grant: '' },
			answers: [fail(403, grantRequired)],
			continueOnFail: true,
		});

		const [output] = await run(context);

		expect(Object.keys(output[0].json)).toEqual(['error']);
		expect(String(output[0].json.error)).toMatch(
			/grant_required.*Set Grant to the otobotGrant of the run/,
		);
	});

	it('reports 403 grant_invalid with its reason, never the grant itself', async () => {
		const { context } = mockContext({
			params: { ...getCredentials, grant: GRANT },
			answers: [
				fail(403, {
					error: 'The grant does not allow this fetch: it has expired',
					code: 'grant_invalid',
					reason: 'expired',
					hasCredentials: false,
					requestId: 'req-exp',
				}),
			],
		});

		const error = await runError(context);

		expect(error.message).toBe(
			'Otobot refused the grant (403 grant_invalid, expired): The grant does not allow this fetch: it has expired',
		);
		expect(exposed(error)).not.toContain(GRANT);
		expect(exposed(error)).not.toContain(CANARY);
	});

	it('refuses a grant with spaces inside without calling the API', async () => {
		const { context, request } = mockContext({
			params: { ...getCredentials, grant: 'otg_a b' },
		});

		const error = await runError(context);

		expect(error).toBeInstanceOf(NodeOperationError);
		expect(error.message).toBe('Grant must be a single token');
		expect(request).not.toHaveBeenCalled();
	});

	it("defaults the Grant parameter to the trigger's otobotGrant, shown for Get User Credentials only", () => {
		const grant = fetcher.description.properties.find((property) => property.name === 'grant');
		expect(grant?.default).toBe('={{ ($json.body || $json).otobotGrant }}');
		expect(grant?.displayOptions).toEqual({ show: { operation: ['getUserCredentials'] } });
	});
});

describe('List User Connections', () => {
	const connections = [
		{
			id: CONNECTION_ID,
			service_name: 'slack',
			label: 'Work',
			account_identifier: 'acme.slack.com',
			status: 'valid',
			is_active: true,
			token_expires_at: null,
			created_at: '2025-01-01T00:00:00Z',
		},
		{
			id: 'c2d3e4f5-a6b7-4c8d-9e0f-1a2b3c4d5e6f',
			service_name: 'google',
			label: null,
			account_identifier: 'jane@acme.com',
			status: 'expired',
			is_active: true,
			token_expires_at: '2025-01-02T00:00:00Z',
			created_at: '2025-01-01T00:00:00Z',
		},
	];
	const listBody = { userId: USER_ID, connections };

	it("returns the user's connections as one item", async () => {
		const { context, requestOptions } = mockContext({
			params: { operation: 'listUserConnections', userId: USER_ID },
			answers: [ok(listBody)],
		});

		const [output] = await run(context);

		expect(output).toEqual([{ json: listBody, pairedItem: { item: 0 } }]);
		expect(requestOptions()).toMatchObject({
			method: 'GET',
			url: `${API_URL}/api/internal/user/${USER_ID}/connections`,
			qs: {},
		});
	});

	it('can output one item per connection, each with the user ID', async () => {
		const { context } = mockContext({
			params: { operation: 'listUserConnections', userId: USER_ID, splitIntoItems: true },
			answers: [ok(listBody)],
		});

		const [output] = await run(context);

		expect(output).toEqual(
			connections.map((connection) => ({
				json: { userId: USER_ID, ...connection },
				pairedItem: { item: 0 },
			})),
		);
	});

	it('outputs no item for a user without connections when splitting', async () => {
		const { context } = mockContext({
			params: { operation: 'listUserConnections', userId: USER_ID, splitIntoItems: true },
			answers: [ok({ userId: USER_ID, connections: [] })],
		});

		expect(await run(context)).toEqual([[]]);
	});
});

describe('Check Connection Status', () => {
	it('returns the status of the connection', async () => {
		const statusBody = {
			id: CONNECTION_ID,
			service_name: 'google',
			status: 'refresh_needed',
			expiresAt: null,
		};
		const { context, requestOptions } = mockContext({
			params: { operation: 'checkConnectionStatus', connectionId: CONNECTION_ID },
			answers: [ok(statusBody)],
		});

		const [output] = await run(context);

		expect(output).toEqual([{ json: statusBody, pairedItem: { item: 0 } }]);
		expect(requestOptions().url).toBe(`${API_URL}/api/internal/connection-status/${CONNECTION_ID}`);
	});

	it('turns an unknown connection into a not_found status item', async () => {
		const { context } = mockContext({
			params: { operation: 'checkConnectionStatus', connectionId: CONNECTION_ID },
			answers: [fail(404, notFoundBody)],
		});

		const [output] = await run(context);

		expect(output[0].json).toEqual({
			id: CONNECTION_ID,
			status: 'not_found',
			error: 'Connection not found',
			code: 'connection_not_found',
			requestId: 'req-404',
		});
	});

	it('refuses a connection ID that is not a UUID without calling the API', async () => {
		const { context, request } = mockContext({
			params: { operation: 'checkConnectionStatus', connectionId: 'abc-123' },
		});

		expect((await runError(context)).message).toBe('Connection ID must be a UUID');
		expect(request).not.toHaveBeenCalled();
	});
});

describe('several items', () => {
	it('makes one request per item, each paired with its input', async () => {
		const { context, request } = mockContext({
			params: [getCredentials, { operation: 'listUserConnections', userId: OTHER_USER_ID }],
			answers: [
				(options) => ok({ ...credentialsBody, url: options.url }),
				(options) => ok({ userId: OTHER_USER_ID, connections: [], url: options.url }),
			],
		});

		const [output] = await run(context);

		expect(request).toHaveBeenCalledTimes(2);
		expect(output.map((item) => item.pairedItem)).toEqual([{ item: 0 }, { item: 1 }]);
		expect(output[1].json.url).toBe(`${API_URL}/api/internal/user/${OTHER_USER_ID}/connections`);
	});
});

describe('parseRetryAfter', () => {
	it('reads a delay in seconds', () => {
		expect(parseRetryAfter('120')).toBe(120);
		expect(parseRetryAfter(['7'])).toBe(7);
	});

	it('reads an HTTP date relative to now', () => {
		const now = Date.parse('2025-01-01T00:00:00Z');
		expect(parseRetryAfter('Wed, 01 Jan 2025 00:01:30 GMT', now)).toBe(90);
	});

	it('ignores a missing or unreadable value', () => {
		expect(parseRetryAfter(undefined)).toBeUndefined();
		expect(parseRetryAfter('soon')).toBeUndefined();
	});
});

describe('descriptions', () => {
	it('the node uses the otobotApi credential and is not offered as an AI tool', () => {
		const { description } = fetcher;
		expect(description.name).toBe('otobotCredentialFetcher');
		expect(description.credentials).toEqual([{ name: 'otobotApi', required: true }]);
		expect(description.usableAsTool).toBeUndefined();
	});

	it('the credential sends the token as x-internal-token and tests an authenticated route', () => {
		const credential = new OtobotApi();
		expect(credential.name).toBe('otobotApi');
		expect(credential.authenticate.properties.headers).toEqual({
			'x-internal-token': '={{$credentials.internalToken}}',
		});
		expect(credential.properties.find((p) => p.name === 'internalToken')?.typeOptions).toEqual({
			password: true,
		});
		expect(credential.properties.find((p) => p.name === 'apiUrl')?.default).toBe(
			'http://api-internal:3001',
		);
		expect(credential.test.request.url).toBe(
			'/api/internal/user/00000000-0000-0000-0000-000000000000/connections',
		);
	});
});
