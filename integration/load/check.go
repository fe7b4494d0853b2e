package load

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// Status is a check's outcome.
type Status string

// Check outcomes. NA means the check could not be evaluated in this run
// (for example a ratio to nginx when nginx is not installed).
const (
	Pass Status = "PASS"
	Miss Status = "MISS"
	NA   Status = "n/a"
)

// Check is one target or threshold, evaluated.
type Check struct {
	Name   string `json:"name"`
	Want   string `json:"want"`
	Got    string `json:"got"`
	Status Status `json:"status"`
}

func check(name string, ok bool, want, got string) Check {
	s := Miss
	if ok {
		s = Pass
	}
	return Check{Name: name, Want: want, Got: got, Status: s}
}

func notApplicable(name, want, why string) Check {
	return Check{Name: name, Want: want, Got: why, Status: NA}
}

// AllPassed reports whether no check missed (n/a does not fail).
func AllPassed(checks []Check) bool {
	for _, c := range checks {
		if c.Status == Miss {
			return false
		}
	}
	return true
}

// WriteChecks prints checks as an aligned list.
func WriteChecks(w io.Writer, checks []Check) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range checks {
		fmt.Fprintf(tw, "%s\t%s\twant %s\tgot %s\n", c.Status, c.Name, c.Want, c.Got)
	}
	return tw.Flush()
}
