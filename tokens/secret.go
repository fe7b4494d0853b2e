package tokens

import (
	"fmt"
	"log/slog"
)

// Redacted is what a Secret prints as, whatever the verb.
const Redacted = "[redacted]"

// Secret holds a credential: a client secret, a proxy key, an access token,
// a password. It prints as [redacted] through fmt, slog and encoding/json;
// Reveal is the only way to the value.
type Secret string

// Reveal returns the secret's value. Call it only where the value is sent.
func (s Secret) Reveal() string { return string(s) }

// String implements fmt.Stringer.
func (Secret) String() string { return Redacted }

// GoString implements fmt.GoStringer, so %#v does not print the value.
func (Secret) GoString() string { return Redacted }

// Format implements fmt.Formatter for every verb (%x and %q included).
func (Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(Redacted)) }

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalText implements encoding.TextMarshaler (used by encoding/json).
func (Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }
