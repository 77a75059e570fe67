import type { INodeProperties } from 'n8n-workflow';

/** Value of the "Service" option that reveals the free-text "Service Code" field. */
export const CUSTOM_SERVICE = '__custom';

/**
 * The Grant parameter's default: the `otobotGrant` that Otobot's trigger route puts in the
 * webhook body (a Webhook trigger's item holds it under `body`), or at the item's top level.
 */
export const GRANT_DEFAULT = '={{ ($json.body || $json).otobotGrant }}';

export const operationProperty: INodeProperties = {
	displayName: 'Operation',
	name: 'operation',
	type: 'options',
	noDataExpression: true,
	options: [
		{
			name: 'Check Connection Status',
			value: 'checkConnectionStatus',
			description: 'Check whether a connection is valid, needs a refresh, expired or was revoked',
			action: 'Check a connection status',
		},
		{
			name: 'Get User Credentials',
			value: 'getUserCredentials',
			description: "Get a user's decrypted credentials for one service",
			action: 'Get user credentials',
		},
		{
			name: 'List User Connections',
			value: 'listUserConnections',
			description: "List a user's connections to third-party services",
			action: 'List user connections',
		},
	],
	default: 'getUserCredentials',
};

export const fieldProperties: INodeProperties[] = [
	{
		displayName: 'User ID',
		name: 'userId',
		type: 'string',
		required: true,
		default: '',
		placeholder: 'e.g. {{ $json.body.userId }}',
		description:
			'UUID of the Otobot user the workflow runs for, usually taken from the trigger. Never hard-code it.',
		displayOptions: { show: { operation: ['getUserCredentials', 'listUserConnections'] } },
	},
	{
		displayName: 'Grant',
		name: 'grant',
		type: 'string',
		default: GRANT_DEFAULT,
		placeholder: 'e.g. {{ $vars.OTOBOT_GRANT_NIGHTLY_REPORT }}',
		description:
			"The user's consent for this read. The default takes the otobotGrant that Otobot's trigger sent with the run (in a Webhook trigger's body). A scheduled workflow uses a standing grant the user created in Otobot: keep it in an n8n variable and reference it here. Empty: no grant is sent (only a caller configured trusted in Otobot reads without one).",
		hint: "Default: the trigger's otobotGrant",
		displayOptions: { show: { operation: ['getUserCredentials'] } },
	},
	{
		displayName: 'Service',
		name: 'service',
		type: 'options',
		options: [
			{ name: 'Airtable', value: 'airtable' },
			{ name: 'GitHub', value: 'github' },
			{ name: 'Google', value: 'google' },
			{ name: 'Microsoft', value: 'microsoft' },
			{ name: 'Notion', value: 'notion' },
			{ name: 'OpenAI', value: 'openai' },
			{ name: 'Other (Enter Code)', value: CUSTOM_SERVICE },
			{ name: 'Slack', value: 'slack' },
		],
		default: 'google',
		description:
			'Service whose credentials to fetch. Choose "Other" for a code not listed, or switch to an expression to take it from the trigger.',
		displayOptions: { show: { operation: ['getUserCredentials'] } },
	},
	{
		displayName: 'Service Code',
		name: 'customService',
		type: 'string',
		// Not `required`: n8n shows this field whenever Service is an expression (it cannot know the
		// value), and an empty required field then blocks the workflow ("has issues"). Checked at run time.
		default: '',
		placeholder: 'e.g. hubspot',
		description: 'Service code as configured in Otobot',
		displayOptions: { show: { operation: ['getUserCredentials'], service: [CUSTOM_SERVICE] } },
	},
	{
		displayName: 'Options',
		name: 'options',
		type: 'collection',
		placeholder: 'Add option',
		default: {},
		description: 'Pick one connection when the user has several for this service',
		displayOptions: { show: { operation: ['getUserCredentials'] } },
		options: [
			{
				displayName: 'Connection ID',
				name: 'connectionId',
				type: 'string',
				default: '',
				description: 'UUID of the connection to use',
			},
			{
				displayName: 'Label',
				name: 'label',
				type: 'string',
				default: '',
				placeholder: 'e.g. Work account',
				description: 'Label the user gave the connection',
			},
		],
	},
	{
		displayName: 'Split Into Items',
		name: 'splitIntoItems',
		type: 'boolean',
		default: false,
		description: 'Whether to output one item per connection instead of one item holding the list',
		displayOptions: { show: { operation: ['listUserConnections'] } },
	},
	{
		displayName: 'Connection ID',
		name: 'connectionId',
		type: 'string',
		required: true,
		default: '',
		placeholder: 'e.g. {{ $json.connectionId }}',
		description: 'UUID of the connection to check',
		displayOptions: { show: { operation: ['checkConnectionStatus'] } },
	},
];
