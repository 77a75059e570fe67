import { defineConfig } from 'vitest/config';

export default defineConfig({
	resolve: {
		// n8n loads the compiled node with require(): test against n8n-workflow's CommonJS build too.
		alias: [
			{
				find: /^n8n-workflow$/,
				replacement: new URL('./node_modules/n8n-workflow/dist/cjs/index.js', import.meta.url)
					.pathname,
			},
		],
	},
	test: {
		include: ['test/**/*.test.ts'],
	},
});
