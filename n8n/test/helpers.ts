import type { IDataObject, IExecuteFunctions, IHttpRequestOptions, INode } from 'n8n-workflow';
import { vi } from 'vitest';

export const USER_ID = '3f2b8c1e-5d4a-4c6b-9e7f-1a2b3c4d5e6f';
export const OTHER_USER_ID = '9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d';
export const CONNECTION_ID = 'b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e';
export const API_URL = 'http://api-internal:3001';
/** Stands in for the internal token: tests check that it never surfaces in requests or errors. */
export const CANARY = 'canary-value-that-must-not-leak';

/** What n8n's helper returns with `returnFullResponse: true`. */
export interface FullResponse {
	statusCode: number;
	headers: IDataObject;
	body: unknown;
}

export const ok = (body: unknown): FullResponse => ({ statusCode: 200, headers: {}, body });

export const fail = (
	statusCode: number,
	body: unknown,
	headers: IDataObject = {},
): FullResponse => ({
	statusCode,
	headers,
	body,
});

type Answer = FullResponse | Error | ((options: IHttpRequestOptions) => FullResponse);

interface MockOptions {
	/** Parameters of every item, or one object per item (its length sets the item count). */
	params: IDataObject | IDataObject[];
	/** One answer per request, in order; the last one repeats. */
	answers?: Answer[];
	continueOnFail?: boolean;
	apiUrl?: string;
}

const node: INode = {
	id: 'otobot-node',
	name: 'Otobot Credential Fetcher',
	type: 'n8n-nodes-otobot.otobotCredentialFetcher',
	typeVersion: 1,
	position: [0, 0],
	parameters: {},
};

/** A minimal IExecuteFunctions: parameters, input items, credentials and the request helper. */
export function mockContext({
	params,
	answers = [],
	continueOnFail = false,
	apiUrl = API_URL,
}: MockOptions) {
	const perItem = Array.isArray(params) ? params : [params];
	let call = 0;
	const request = vi.fn(async (_credentialType: string, options: IHttpRequestOptions) => {
		const answer = answers[Math.min(call++, answers.length - 1)];
		if (answer === undefined) throw new Error('unexpected request');
		if (answer instanceof Error) throw answer;
		return typeof answer === 'function' ? answer(options) : answer;
	});

	const context = {
		getInputData: () => perItem.map((_, index) => ({ json: { index } })),
		getNodeParameter: (name: string, itemIndex: number, fallback?: unknown) => {
			const value = perItem[itemIndex][name];
			if (value !== undefined) return value;
			if (fallback !== undefined) return fallback;
			throw new Error(`Could not get parameter "${name}"`);
		},
		getNode: () => node,
		continueOnFail: () => continueOnFail,
		getCredentials: vi.fn(async () => ({ apiUrl, internalToken: CANARY })),
		helpers: { httpRequestWithAuthentication: request },
	} as unknown as IExecuteFunctions;

	/** The options of the n-th request. */
	const requestOptions = (n = 0) => request.mock.calls[n][1];
	return { context, request, requestOptions };
}
