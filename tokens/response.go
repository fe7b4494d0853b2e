package tokens

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// OAuthError is an error answer of the token service (RFC 6749 §5.2).
// Its text holds the server's code and description, cleaned of anything
// but printable ASCII, cut short, and with the client secret masked in
// case a server echoes it.
type OAuthError struct {
	Status      int    // HTTP status of the answer
	Code        string // the "error" field, e.g. invalid_client
	Description string // the "error_description" field, may be empty
}

func (e *OAuthError) Error() string {
	s := fmt.Sprintf("token service error %q (status %d)", e.Code, e.Status)
	if e.Description != "" {
		s += ": " + e.Description
	}
	return s
}

const maxErrorField = 200

// scrub makes the fields safe to log: printable ASCII, bounded, and none
// of the secrets, each a form the secret may take on the wire (raw,
// form-encoded, inside a Basic credential).
func (e *OAuthError) scrub(secrets ...string) {
	clean := func(s string) string {
		for _, secret := range secrets {
			if secret != "" {
				s = strings.ReplaceAll(s, secret, Redacted)
			}
		}
		s = strings.Map(func(r rune) rune {
			if r < 0x20 || r > 0x7e {
				return -1
			}
			return r
		}, s)
		if len(s) > maxErrorField {
			s = s[:maxErrorField] + "..."
		}
		return s
	}
	e.Code, e.Description = clean(e.Code), clean(e.Description)
}

type tokenResponse struct {
	accessToken string
	tokenType   string
	expiresIn   time.Duration // 0 when absent
}

// parseTokenResponse reads a token service answer. An OAuth error body,
// whatever the status, gives an *OAuthError; a success needs a 2xx status,
// a JSON object and a non-empty access_token. expires_in may be a number
// or a string; ≤ 0 is an error and above a year is clamped to a year.
func parseTokenResponse(status int, body []byte) (tokenResponse, error) {
	var raw struct {
		AccessToken string          `json:"access_token"`
		TokenType   string          `json:"token_type"`
		ExpiresIn   json.RawMessage `json:"expires_in"`
		Error       string          `json:"error"`
		Description string          `json:"error_description"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	jsonErr := dec.Decode(&raw)
	if jsonErr == nil && raw.Error != "" {
		oe := &OAuthError{Status: status, Code: raw.Error, Description: raw.Description}
		oe.scrub("")
		return tokenResponse{}, oe
	}
	// The body is never quoted in errors: a success body holds a token.
	if status < 200 || status > 299 {
		return tokenResponse{}, fmt.Errorf("token service answered status %d", status)
	}
	if jsonErr != nil {
		return tokenResponse{}, errors.New("parse token response: invalid JSON")
	}
	if raw.AccessToken == "" {
		return tokenResponse{}, errors.New("parse token response: no access_token")
	}
	exp, err := parseExpiresIn(raw.ExpiresIn)
	if err != nil {
		return tokenResponse{}, fmt.Errorf("parse token response: %w", err)
	}
	return tokenResponse{raw.AccessToken, raw.TokenType, exp}, nil
}

// parseExpiresIn accepts 3600, 3600.0, "3600" and null/absent (0).
func parseExpiresIn(msg json.RawMessage) (time.Duration, error) {
	s := string(bytes.TrimSpace(msg))
	if s == "" || s == "null" {
		return 0, nil
	}
	if strings.HasPrefix(s, `"`) {
		if err := json.Unmarshal(msg, &s); err != nil {
			return 0, errors.New("expires_in: bad string")
		}
		s = strings.TrimSpace(s)
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, errors.New("expires_in: not a number")
	}
	if !(f > 0) { // also catches NaN
		return 0, fmt.Errorf("expires_in: %s is not positive", truncate(s, 32))
	}
	// Compared in seconds before converting, so 1e12 cannot overflow.
	if f >= MaxLifetime.Seconds() || math.IsInf(f, 1) {
		return MaxLifetime, nil
	}
	return max(time.Duration(f*float64(time.Second)), time.Nanosecond), nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
