package tokens

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseTokenResponse(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		body      string
		wantToken string
		wantExp   time.Duration
		wantErr   string // substring; "" for success
	}{
		{"number", 200, `{"access_token":"a","token_type":"Bearer","expires_in":3600}`,
			"a", time.Hour, ""},
		{"string", 200, `{"access_token":"a","expires_in":"3600"}`, "a", time.Hour, ""},
		{"string with spaces", 200, `{"access_token":"a","expires_in":" 60 "}`, "a", time.Minute, ""},
		{"fraction", 200, `{"access_token":"a","expires_in":1.5}`, "a", 1500 * time.Millisecond, ""},
		{"absent", 200, `{"access_token":"a"}`, "a", 0, ""},
		{"null", 200, `{"access_token":"a","expires_in":null}`, "a", 0, ""},
		{"other token type", 200, `{"access_token":"a","token_type":"mac","expires_in":5}`,
			"a", 5 * time.Second, ""},
		{"10^12 clamped", 200, `{"access_token":"a","expires_in":1000000000000}`,
			"a", MaxLifetime, ""},
		{"1e400 clamped", 200, `{"access_token":"a","expires_in":"1e400"}`, "a", MaxLifetime, ""},
		{"exactly a year", 200, `{"access_token":"a","expires_in":31536000}`, "a", MaxLifetime, ""},
		{"201 accepted", 201, `{"access_token":"a","expires_in":1}`, "a", time.Second, ""},
		{"zero", 200, `{"access_token":"a","expires_in":0}`, "", 0, "is not positive"},
		{"negative", 200, `{"access_token":"a","expires_in":-5}`, "", 0, "is not positive"},
		{"negative string", 200, `{"access_token":"a","expires_in":"-5"}`, "", 0, "not positive"},
		{"NaN string", 200, `{"access_token":"a","expires_in":"NaN"}`, "", 0, "not positive"},
		{"word", 200, `{"access_token":"a","expires_in":"soon"}`, "", 0, "not a number"},
		{"bool", 200, `{"access_token":"a","expires_in":true}`, "", 0, "not a number"},
		{"no token", 200, `{"token_type":"Bearer","expires_in":60}`, "", 0, "no access_token"},
		{"empty token", 200, `{"access_token":"","expires_in":60}`, "", 0, "no access_token"},
		{"token not a string", 200, `{"access_token":42}`, "", 0, "invalid JSON"},
		{"html", 200, `<html>login</html>`, "", 0, "invalid JSON"},
		{"empty body", 200, ``, "", 0, "invalid JSON"},
		{"oauth error", 401, `{"error":"invalid_client","error_description":"unknown client"}`,
			"", 0, `token service error "invalid_client" (status 401): unknown client`},
		{"oauth error with 200", 200, `{"error":"invalid_grant"}`, "", 0,
			`token service error "invalid_grant" (status 200)`},
		{"5xx html", 503, `<html>down</html>`, "", 0, "token service answered status 503"},
		{"5xx with token-like body", 500, `{"access_token":"leak"}`, "", 0, "status 500"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := parseTokenResponse(tt.status, []byte(tt.body))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "leak") {
					t.Errorf("error %q quotes the body", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if r.accessToken != tt.wantToken || r.expiresIn != tt.wantExp {
				t.Errorf("got token %q expires_in %s, want %q %s",
					r.accessToken, r.expiresIn, tt.wantToken, tt.wantExp)
			}
		})
	}
}

func TestOAuthError_TextIsCleanedAndBounded(t *testing.T) {
	long := strings.Repeat("x", 1000)
	_, err := parseTokenResponse(400,
		[]byte(`{"error":"bad\u0000\u001b[31m","error_description":"`+long+`"}`))
	var oe *OAuthError
	if !errors.As(err, &oe) {
		t.Fatalf("got %T, want *OAuthError", err)
	}
	if oe.Code != "bad[31m" {
		t.Errorf("got code %q, want control characters removed: %q", oe.Code, "bad[31m")
	}
	if len(oe.Description) != maxErrorField+3 {
		t.Errorf("got description of %d bytes, want %d", len(oe.Description), maxErrorField+3)
	}
}

func FuzzParseTokenResponse(f *testing.F) {
	f.Add(200, []byte(`{"access_token":"a","expires_in":3600}`))
	f.Add(200, []byte(`{"access_token":"a","expires_in":"1e400"}`))
	f.Add(400, []byte(`{"error":"invalid_client"}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		r, err := parseTokenResponse(status, body)
		if err != nil {
			if r != (tokenResponse{}) {
				t.Errorf("error %v with a non-empty result %+v", err, r)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error text %q spans lines", err)
			}
			return
		}
		if status < 200 || status > 299 {
			t.Errorf("status %d accepted", status)
		}
		if r.accessToken == "" {
			t.Error("empty access_token accepted")
		}
		if r.expiresIn < 0 || r.expiresIn > MaxLifetime {
			t.Errorf("expires_in %s outside [0, %s]", r.expiresIn, MaxLifetime)
		}
		tok := NewToken(r.accessToken, time.Unix(0, 0), r.expiresIn, time.Minute)
		if tok.FreshUntil.After(tok.UsableUntil) || !tok.UsableUntil.After(tok.SentAt) {
			t.Errorf("times out of order: %+v", tok)
		}
	})
}
