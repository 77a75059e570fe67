# Entry points; the work is done by the scripts.
.PHONY: test e2e-n8n

# The whole suite (installs what it needs first).
test:
	scripts/test.sh

# The n8n node in real n8n 1.x and 2.x against otobot serve (N8N_E2E_VERSIONS="1.123.81" for one).
e2e-n8n:
	tests/e2e-n8n/run.sh
