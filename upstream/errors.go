package upstream

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Error codes of the answers cerbai itself produces. They go into the
// "code" field of the OpenAI-shaped error body.
const (
	CodeInvalidRequest      = "invalid_request"      // 400
	CodeUnauthorized        = "unauthorized"         // 401
	CodeNotFound            = "not_found"            // 404
	CodeMethodNotAllowed    = "method_not_allowed"   // 405
	CodeRequestTimeout      = "request_timeout"      // 408
	CodeRequestTooLarge     = "request_too_large"    // 413
	CodeUpstreamUnreachable = "upstream_unreachable" // 502
	CodeTooManyRequests     = "too_many_requests"    // 503
	CodeTokenUnavailable    = "token_unavailable"    // 503
	CodeUpstreamTimeout     = "upstream_timeout"     // 504
)

// errorBody is the OpenAI error shape, so SDKs show the message as is.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"` // always null
	Code    string  `json:"code"`
}

// WriteError writes {"error":{"message":msg,"type":"cerbai_error",
// "param":null,"code":code}} with the given status, Content-Type
// application/json and Cache-Control: no-store. The message is shown to
// the client: keep it short and free of upstream detail.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	b, err := json.Marshal(errorBody{Error: errorDetail{
		Message: msg, Type: "cerbai_error", Code: code,
	}})
	if err != nil { // cannot happen with string fields; keep the shape anyway
		b = []byte(`{"error":{"message":"internal error","type":"cerbai_error",` +
			`"param":null,"code":"internal_error"}}`)
	}
	b = append(b, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b) // the client may be gone; nothing to do about it
}
