import type {
	IExecuteFunctions,
	INodeExecutionData,
	INodeType,
	INodeTypeDescription,
} from 'n8n-workflow';
import { NodeApiError, NodeConnectionTypes, NodeOperationError } from 'n8n-workflow';

import { fieldProperties, operationProperty } from './descriptions';
import { type Operation, operations } from './operations';
import { CREDENTIAL_TYPE, getApiUrl } from './transport';

// SECURITY: not `usableAsTool`: its output holds decrypted tokens, which must not reach an AI model.
// eslint-disable-next-line @n8n/community-nodes/node-usable-as-tool
export class OtobotCredentialFetcher implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'Otobot Credential Fetcher',
		name: 'otobotCredentialFetcher',
		icon: { light: 'file:../../icons/otobot.svg', dark: 'file:../../icons/otobot.dark.svg' },
		group: ['transform'],
		version: 1,
		subtitle: '={{$parameter["operation"]}}',
		description: "Fetch a user's third-party credentials from the Otobot vault at run time",
		defaults: {
			name: 'Otobot Credential Fetcher',
		},
		inputs: [NodeConnectionTypes.Main],
		outputs: [NodeConnectionTypes.Main],
		credentials: [
			{
				name: CREDENTIAL_TYPE,
				required: true,
			},
		],
		properties: [operationProperty, ...fieldProperties],
	};

	async execute(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
		const items = this.getInputData();
		const returnData: INodeExecutionData[] = [];

		// Each item is handled on its own: one bad user ID fails (or, with Continue On Fail, marks) only its item.
		for (let itemIndex = 0; itemIndex < items.length; itemIndex++) {
			try {
				const operation = this.getNodeParameter('operation', itemIndex) as Operation;
				const handler = operations[operation];
				if (!handler) {
					throw new NodeOperationError(this.getNode(), `Unknown operation "${operation}"`, {
						itemIndex,
					});
				}
				const apiUrl = await getApiUrl.call(this, itemIndex);
				const results = await handler.call(this, itemIndex, apiUrl);
				for (const json of results) {
					returnData.push({ json, pairedItem: { item: itemIndex } });
				}
			} catch (error) {
				if (this.continueOnFail()) {
					// Exactly `{ error }`, so that n8n routes the item to the error output when one is enabled.
					returnData.push({
						json: { error: (error as Error).message },
						pairedItem: { item: itemIndex },
					});
					continue;
				}
				throw asNodeError(this, error, itemIndex);
			}
		}

		return [returnData];
	}
}

/** Errors raised by this node are already NodeApiError/NodeOperationError; anything else is wrapped. */
function asNodeError(context: IExecuteFunctions, error: unknown, itemIndex: number) {
	if (error instanceof NodeApiError || error instanceof NodeOperationError) return error;
	return new NodeOperationError(context.getNode(), error as Error, { itemIndex });
}
