// Package integration holds cerbai's end-to-end tests: they build the real
// binary and run it as an operator would, against an mTLS token server, a
// fake LLM and a real redis-server. The fakes live in integration/fake.
package integration
