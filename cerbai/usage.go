package main

import (
	"fmt"
	"io"
	"reflect"
	"strings"
)

// writeUsage prints -h: every option with its flag, its environment
// variable and its default.
func writeUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: cerbai [flags]
       cerbai healthcheck [flags]
       cerbai --version

Every flag can also be set by its environment variable; a flag beats the
variable, which beats the default. Lists are comma-separated (a list flag
may also be repeated); sizes are bytes with an optional KiB, MiB or GiB
suffix; durations use Go syntax (30s, 5m).

Flags:
`)
	def := reflect.ValueOf(defaultConfig())
	for _, o := range options() {
		fmt.Fprintf(w, "  --%s", o.flag)
		if o.meta != "" {
			fmt.Fprintf(w, " %s", o.meta)
		}
		fmt.Fprintf(w, "\n        %s\n        env %s", o.help, o.env)
		if d := defaultText(def.Field(o.field)); d != "" {
			fmt.Fprintf(w, ", default %s", d)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprint(w, "  --version\n        print the version, commit and build date, and exit\n")
}

// defaultText renders a default value for -h; "" when it is zero.
func defaultText(v reflect.Value) string {
	if v.IsZero() {
		return ""
	}
	switch x := v.Interface().(type) {
	case string:
		return fmt.Sprintf("%q", x)
	case []int:
		parts := make([]string, len(x))
		for i, n := range x {
			parts[i] = fmt.Sprint(n)
		}
		return strings.Join(parts, ",")
	default:
		return fmt.Sprint(x)
	}
}
