import type { IDataObject, IExecuteFunctions } from 'n8n-workflow';
import { NodeOperationError } from 'n8n-workflow';

import { CUSTOM_SERVICE } from './descriptions';
import { CONNECTION_EXPIRED, CONNECTION_NOT_FOUND, otobotApiRequest } from './transport';

export type Operation = 'getUserCredentials' | 'listUserConnections' | 'checkConnectionStatus';

type OperationHandler = (
	this: IExecuteFunctions,
	itemIndex: number,
	apiUrl: string,
) => Promise<IDataObject[]>;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const SERVICE_CODE = /^[a-z0-9][a-z0-9_-]{0,63}$/;

/** GET /api/internal/user/:userId/credentials/:serviceName[?connectionId=|?label=] */
async function getUserCredentials(
	this: IExecuteFunctions,
	itemIndex: number,
	apiUrl: string,
): Promise<IDataObject[]> {
	const userId = uuidParameter.call(this, 'userId', 'User ID', itemIndex);
	const service = serviceParameter.call(this, itemIndex);
	const qs = connectionSelector.call(this, itemIndex);
	const grant = grantParameter.call(this, itemIndex);

	const path = `/api/internal/user/${encodeURIComponent(userId)}/credentials/${encodeURIComponent(service)}`;
	const { statusCode, body } = await otobotApiRequest.call(this, apiUrl, path, qs, itemIndex, {
		grant,
	});
	if (statusCode === 404) {
		// "Not found" is data: an IF node on {{ $json.hasCredentials }} branches on it.
		return [notFound(body, { hasCredentials: false, userId, service, ...qs })];
	}
	return [body];
}

/** GET /api/internal/user/:userId/connections */
async function listUserConnections(
	this: IExecuteFunctions,
	itemIndex: number,
	apiUrl: string,
): Promise<IDataObject[]> {
	const userId = uuidParameter.call(this, 'userId', 'User ID', itemIndex);
	const splitIntoItems = this.getNodeParameter('splitIntoItems', itemIndex, false) as boolean;

	const path = `/api/internal/user/${encodeURIComponent(userId)}/connections`;
	const { body } = await otobotApiRequest.call(this, apiUrl, path, {}, itemIndex);
	if (!splitIntoItems) return [body];
	const connections = Array.isArray(body.connections) ? (body.connections as IDataObject[]) : [];
	return connections.map((connection) => ({ userId, ...connection }));
}

/** GET /api/internal/connection-status/:connectionId */
async function checkConnectionStatus(
	this: IExecuteFunctions,
	itemIndex: number,
	apiUrl: string,
): Promise<IDataObject[]> {
	const connectionId = uuidParameter.call(this, 'connectionId', 'Connection ID', itemIndex);

	const path = `/api/internal/connection-status/${encodeURIComponent(connectionId)}`;
	const { statusCode, body } = await otobotApiRequest.call(this, apiUrl, path, {}, itemIndex);
	if (statusCode === 404) {
		return [notFound(body, { id: connectionId, status: 'not_found' })];
	}
	return [body];
}

export const operations: Record<Operation, OperationHandler> = {
	getUserCredentials,
	listUserConnections,
	checkConnectionStatus,
};

/** A required UUID parameter, checked here so that a bad value never reaches the API. */
function uuidParameter(
	this: IExecuteFunctions,
	name: string,
	label: string,
	itemIndex: number,
): string {
	const value = String(this.getNodeParameter(name, itemIndex, '') ?? '').trim();
	if (value === '') {
		throw new NodeOperationError(this.getNode(), `${label} is required`, { itemIndex });
	}
	return checkUuid.call(this, value, label, itemIndex);
}

function checkUuid(this: IExecuteFunctions, value: string, label: string, itemIndex: number) {
	if (!UUID.test(value)) {
		const shown = value.length > 40 ? `${value.slice(0, 40)}…` : value;
		throw new NodeOperationError(this.getNode(), `${label} must be a UUID`, {
			itemIndex,
			description: `Got ${JSON.stringify(shown)}; expected the form 123e4567-e89b-12d3-a456-426614174000.`,
		});
	}
	return value;
}

/** The service code: a listed option, the free-text "Service Code", or an expression's result. */
function serviceParameter(this: IExecuteFunctions, itemIndex: number): string {
	const selected = String(this.getNodeParameter('service', itemIndex, '') ?? '').trim();
	const service = (
		selected === CUSTOM_SERVICE
			? String(this.getNodeParameter('customService', itemIndex, '') ?? '')
			: selected
	)
		.trim()
		.toLowerCase();
	if (!SERVICE_CODE.test(service)) {
		throw new NodeOperationError(
			this.getNode(),
			service === '' ? 'Service is required' : 'Service must be a service code',
			{
				itemIndex,
				description:
					'A service code is lowercase letters, digits, "-" or "_", e.g. "google" or "notion".',
			},
		);
	}
	return service;
}

/**
 * The grant to present, or undefined when the parameter is empty (an expression that found no
 * `otobotGrant`). Only its presence is ever reported, never its value.
 */
function grantParameter(this: IExecuteFunctions, itemIndex: number): string | undefined {
	const value = this.getNodeParameter('grant', itemIndex, '');
	const grant = typeof value === 'string' ? value.trim() : '';
	if (/[\s\p{Cc}]/u.test(grant)) {
		throw new NodeOperationError(this.getNode(), 'Grant must be a single token', {
			itemIndex,
			description:
				'Pass the otobotGrant of the run (or a standing grant) unchanged: it holds no spaces or line breaks.',
		});
	}
	return grant === '' ? undefined : grant;
}

/** Optional `connectionId` or `label` query parameter choosing among several connections. */
function connectionSelector(this: IExecuteFunctions, itemIndex: number): IDataObject {
	const options = this.getNodeParameter('options', itemIndex, {}) as {
		connectionId?: string;
		label?: string;
	};
	const connectionId = String(options.connectionId ?? '').trim();
	const label = String(options.label ?? '').trim();
	if (connectionId && label) {
		throw new NodeOperationError(this.getNode(), 'Set either Connection ID or Label, not both', {
			itemIndex,
		});
	}
	if (connectionId) {
		return { connectionId: checkUuid.call(this, connectionId, 'Connection ID', itemIndex) };
	}
	return label ? { label } : {};
}

/** The item for Otobot's 404 `connection_not_found` or `connection_expired`. */
function notFound(body: IDataObject, fields: IDataObject): IDataObject {
	const expired = body.code === CONNECTION_EXPIRED;
	return {
		...fields,
		error: typeof body.error === 'string' ? body.error : 'Connection not found',
		code: expired ? CONNECTION_EXPIRED : CONNECTION_NOT_FOUND,
		...(expired
			? { tokenExpired: true, connectionId: body.connectionId, metadata: body.metadata }
			: {}),
		...(typeof body.requestId === 'string' ? { requestId: body.requestId } : {}),
	};
}
