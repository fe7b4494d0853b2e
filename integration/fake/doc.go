// Package fake provides the loopback stand-ins cerbai is tested and demoed
// against: a throwaway PKI (NewPKI), an OAuth2 token service that requires
// a client certificate (NewTokenServer), and an OpenAI-compatible LLM with
// streaming whose pace a test can control (NewLLM). Standard library only,
// so the demo, the load tool and the tests can all import it.
package fake
