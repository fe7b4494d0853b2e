// Package load measures what a proxy in front of an OpenAI-compatible LLM
// adds: requests per second and latency of small JSON calls, the proxy's
// CPU per request and memory per idle stream (read from /proc), the delay
// and completeness of server-sent event streams, and large-body throughput.
//
// It starts its own fake LLM tuned for measuring (FakeLLM), runs cerbai and
// optionally nginx as subprocesses (StartEnv), and offers two entry points:
// RunBench, which compares targets side by side against issue 5's targets,
// and RunProfile, which runs one of cerbai's load profiles and checks its
// thresholds. The cerbai-load command wraps both.
package load
