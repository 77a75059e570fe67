import type { IConnections, INode } from 'n8n-workflow';
import { describe, expect, it } from 'vitest';

import { OtobotCredentialFetcher } from '../nodes/OtobotCredentialFetcher/OtobotCredentialFetcher.node';

interface WorkflowFile {
	name: string;
	nodes: INode[];
	connections: IConnections;
}

// Parsed at import: a file that is not valid JSON fails this whole suite.
const workflows = import.meta.glob<WorkflowFile>(['../workflows/*.json', './e2e-workflow.json'], {
	eager: true,
	import: 'default',
});

const OTOBOT_TYPE = 'n8n-nodes-otobot.otobotCredentialFetcher';
const { properties } = new OtobotCredentialFetcher().description;
const parameterNames = new Set(properties.map((property) => property.name));
const operations = properties
	.find((property) => property.name === 'operation')
	?.options?.map((option) => ('value' in option ? option.value : undefined));

const e2e = workflows['./e2e-workflow.json'];
const byName = (workflow: WorkflowFile, name: string) => {
	const node = workflow.nodes.find((candidate) => candidate.name === name);
	if (!node) throw new Error(`no node "${name}"`);
	return node;
};
const targets = (workflow: WorkflowFile, from: string, output: number) =>
	(workflow.connections[from]?.main?.[output] ?? []).map((connection) => connection?.node);

describe('example workflows', () => {
	it('are the four templates and the end-to-end workflow', () => {
		expect(Object.keys(workflows).sort()).toEqual([
			'../workflows/1-google-drive-to-notion.json',
			'../workflows/2-multi-channel-notification.json',
			'../workflows/3-daily-token-maintenance.json',
			'../workflows/4-secured-webhook-template.json',
			'./e2e-workflow.json',
		]);
	});

	describe.each(Object.entries(workflows))('%s', (_file, workflow) => {
		it('has a name, nodes and connections', () => {
			expect(typeof workflow.name).toBe('string');
			expect(workflow.nodes.length).toBeGreaterThan(0);
			expect(typeof workflow.connections).toBe('object');
		});

		it('uses only n8n-nodes-base nodes and the Otobot node', () => {
			for (const node of workflow.nodes) {
				expect(
					node.type === OTOBOT_TYPE || /^n8n-nodes-base\.[A-Za-z0-9]+$/.test(node.type),
					node.type,
				).toBe(true);
			}
		});

		it('has unique node names and ids, and connects only existing nodes', () => {
			const names = workflow.nodes.map((node) => node.name);
			expect(new Set(names).size).toBe(names.length);
			expect(new Set(workflow.nodes.map((node) => node.id)).size).toBe(names.length);
			for (const [from, outputs] of Object.entries(workflow.connections)) {
				expect(names).toContain(from);
				for (const connection of Object.values(outputs).flat(2)) {
					expect(names).toContain(connection?.node);
				}
			}
		});

		it('references credentials by name only and holds no secret', () => {
			for (const node of workflow.nodes) {
				for (const reference of Object.values(node.credentials ?? {})) {
					expect(Object.keys(reference)).toEqual(['name']);
				}
			}
			const text = JSON.stringify(workflow);
			expect(text).not.toMatch(/x-internal-token|internalToken|N8N_INTERNAL_TOKEN/i);
		});

		it('configures the Otobot node with its own parameters and a user ID from the data', () => {
			for (const node of workflow.nodes.filter(({ type }) => type === OTOBOT_TYPE)) {
				expect(node.typeVersion).toBe(1);
				expect(node.credentials).toEqual({ otobotApi: { name: 'Otobot API' } });
				expect(operations).toContain(node.parameters.operation);
				for (const name of Object.keys(node.parameters)) expect(parameterNames).toContain(name);
				for (const name of ['userId', 'connectionId'] as const) {
					const value = node.parameters[name];
					if (value !== undefined) expect(String(value)).toMatch(/^=\{\{.+\}\}$/);
				}
			}
		});
	});

	it("templates pass the trigger's grant to every credential fetch", () => {
		for (const [file, workflow] of Object.entries(workflows)) {
			if (file === './e2e-workflow.json') continue;
			const webhook = workflow.nodes.some(({ type }) => type === 'n8n-nodes-base.webhook');
			for (const node of workflow.nodes.filter(({ type }) => type === OTOBOT_TYPE)) {
				if (node.parameters.operation !== 'getUserCredentials') continue;
				expect(webhook, `${file}: a credential fetch needs a trigger that brings a grant`).toBe(
					true,
				);
				expect(node.parameters.grant, `${file}: ${node.name}`).toBe(
					"={{ $('Webhook Trigger').first().json.body.otobotGrant }}",
				);
			}
		}
	});

	it('templates protect their webhooks with header auth', () => {
		for (const [file, workflow] of Object.entries(workflows)) {
			if (file === './e2e-workflow.json') continue;
			for (const node of workflow.nodes.filter(({ type }) => type === 'n8n-nodes-base.webhook')) {
				expect(node.parameters.authentication, file).toBe('headerAuth');
				expect(node.credentials, file).toEqual({
					httpHeaderAuth: { name: 'Otobot Webhook Secret' },
				});
			}
		}
	});
});

describe('end-to-end workflow', () => {
	it('takes POST /otobot-e2e and answers from a Respond to Webhook node', () => {
		expect(byName(e2e, 'Webhook').parameters).toMatchObject({
			httpMethod: 'POST',
			path: 'otobot-e2e',
			responseMode: 'responseNode',
		});
		expect(targets(e2e, 'Webhook', 0)).toEqual(['userId present?']);
	});

	it('fetches credentials for the userId and service of the body and responds with them', () => {
		expect(targets(e2e, 'userId present?', 0)).toEqual(['Otobot Credential Fetcher']);
		expect(byName(e2e, 'Otobot Credential Fetcher').parameters).toMatchObject({
			operation: 'getUserCredentials',
			userId: '={{ $json.body.userId }}',
			service: '={{ $json.body.service }}',
		});
		expect(targets(e2e, 'Otobot Credential Fetcher', 0)).toEqual(['Grant refused?']);
		expect(targets(e2e, 'Grant refused?', 1)).toEqual(['Respond with Node Output']);
		expect(byName(e2e, 'Respond with Node Output').parameters.respondWith).toBe(
			'firstIncomingItem',
		);
	});

	it("presents the trigger's grant through the Grant parameter's default", () => {
		expect(byName(e2e, 'Otobot Credential Fetcher').parameters.grant).toBeUndefined();
		expect(properties.find((property) => property.name === 'grant')?.default).toBe(
			'={{ ($json.body || $json).otobotGrant }}',
		);
	});

	it("answers 403 with the node's message when Otobot refuses the grant (its IF branch)", () => {
		expect(byName(e2e, 'Otobot Credential Fetcher').onError).toBe('continueRegularOutput');
		const condition = (
			byName(e2e, 'Grant refused?').parameters.conditions as {
				conditions: Array<{ leftValue: string; rightValue: string }>;
			}
		).conditions[0];
		expect([condition.leftValue, condition.rightValue]).toEqual([
			"={{ $json.error || '' }}",
			'(403 grant_',
		]);
		expect(targets(e2e, 'Grant refused?', 0)).toEqual(['Respond 403 (Grant Refused)']);
		expect(byName(e2e, 'Respond 403 (Grant Refused)').parameters.options).toEqual({
			responseCode: 403,
		});
	});

	it('answers 400 {"error": "userId required"} without a userId', () => {
		expect(targets(e2e, 'userId present?', 1)).toEqual(['Respond 400']);
		const { parameters } = byName(e2e, 'Respond 400');
		expect(parameters.options).toEqual({ responseCode: 400 });
		expect(JSON.parse(String(parameters.responseBody))).toEqual({ error: 'userId required' });
	});
});
