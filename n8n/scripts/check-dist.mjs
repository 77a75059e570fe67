// Checks that dist/ is what n8n loads: every file listed in package.json "n8n" exists,
// exports the class named after it, and its icons (and a node's codex file) sit beside it.
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { n8n } = JSON.parse(readFileSync(resolve(root, 'package.json'), 'utf8'));
const problems = [];

for (const kind of ['credentials', 'nodes']) {
	for (const file of n8n[kind]) {
		const path = resolve(root, file);
		if (!existsSync(path)) {
			problems.push(`${file} is missing (run npm run build)`);
			continue;
		}
		const className = basename(file).split('.')[0];
		const Type = require(path)[className];
		if (typeof Type !== 'function') {
			problems.push(`${file} does not export class ${className}`);
			continue;
		}
		const instance = new Type();
		const icon = kind === 'nodes' ? instance.description.icon : instance.icon;
		for (const ref of typeof icon === 'string' ? [icon] : Object.values(icon ?? {})) {
			if (!existsSync(resolve(dirname(path), ref.replace(/^file:/, '')))) {
				problems.push(`${file}: icon ${ref} is missing`);
			}
		}
		if (kind === 'nodes' && !existsSync(path.replace(/\.js$/, '.json'))) {
			problems.push(`${file}: codex file ${basename(path, '.js')}.json is missing`);
		}
	}
}

if (problems.length > 0) {
	console.error(problems.join('\n'));
	process.exit(1);
}
console.log(`dist/ holds ${n8n.credentials.length} credential(s) and ${n8n.nodes.length} node(s) as n8n loads them`);
