import type {
	IAuthenticateGeneric,
	Icon,
	ICredentialTestRequest,
	ICredentialType,
	INodeProperties,
} from 'n8n-workflow';

export class OtobotApi implements ICredentialType {
	name = 'otobotApi';

	displayName = 'Otobot API';

	icon: Icon = { light: 'file:../icons/otobot.svg', dark: 'file:../icons/otobot.dark.svg' };

	documentationUrl = 'https://www.npmjs.com/package/n8n-nodes-otobot#credentials';

	properties: INodeProperties[] = [
		{
			displayName: 'API URL',
			name: 'apiUrl',
			type: 'string',
			default: 'http://api-internal:3001',
			placeholder: 'http://api-internal:3001',
			description:
				'Base URL of the Otobot internal API as seen from n8n (inside Docker Compose: the service name, not localhost)',
			required: true,
		},
		{
			displayName: 'Internal Token',
			name: 'internalToken',
			type: 'string',
			typeOptions: { password: true },
			default: '',
			description: 'The value of N8N_INTERNAL_TOKEN (or of a token in INTERNAL_TOKENS) in Otobot',
			required: true,
		},
	];

	// SECURITY: n8n adds the header itself; the node never builds it, so the token stays out of node code and errors.
	authenticate: IAuthenticateGeneric = {
		type: 'generic',
		properties: {
			headers: {
				'x-internal-token': '={{$credentials.internalToken}}',
			},
		},
	};

	// An authenticated route that answers 200 (empty list) for the nil user when the token is right, 401 otherwise.
	test: ICredentialTestRequest = {
		request: {
			baseURL: '={{$credentials.apiUrl}}',
			url: '/api/internal/user/00000000-0000-0000-0000-000000000000/connections',
			method: 'GET',
		},
	};
}
