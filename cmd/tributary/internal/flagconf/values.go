package flagconf

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// value is a flag.Value whose parsing is separate from storing, so that a
// value from a lower-precedence source can be validated without being used.
type value interface {
	// Set parses s and stores it (used by the flag package).
	Set(s string) error
	// String formats the current value.
	String() string
	// parse validates s and returns the typed value.
	parse(s string) (any, error)
	// parseList validates the items of a YAML list.
	parseList(items []string) (any, error)
	// store stores a result of parse or parseList.
	store(x any)
	// typeName is the argument placeholder shown in usage.
	typeName() string
	// empty reports whether the value counts as missing for Require.
	empty() bool
}

var errNotList = errors.New("expected a single value, got a list")

type stringValue struct{ p *string }

func (v *stringValue) Set(s string) error              { *v.p = s; return nil }
func (v *stringValue) String() string                  { return *v.p }
func (v *stringValue) parse(s string) (any, error)     { return s, nil }
func (v *stringValue) parseList([]string) (any, error) { return nil, errNotList }
func (v *stringValue) store(x any)                     { *v.p = x.(string) }
func (v *stringValue) typeName() string                { return "string" }
func (v *stringValue) empty() bool                     { return *v.p == "" }

type intValue struct{ p *int }

func (v *intValue) Set(s string) error { return set(v, s) }
func (v *intValue) String() string     { return strconv.Itoa(*v.p) }
func (v *intValue) parse(s string) (any, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 0, strconv.IntSize)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return nil, errors.New("integer out of range")
		}
		return nil, errors.New("not an integer")
	}
	return int(n), nil
}
func (v *intValue) parseList([]string) (any, error) { return nil, errNotList }
func (v *intValue) store(x any)                     { *v.p = x.(int) }
func (v *intValue) typeName() string                { return "int" }
func (v *intValue) empty() bool                     { return false }

type boolValue struct{ p *bool }

func (v *boolValue) Set(s string) error { return set(v, s) }
func (v *boolValue) String() string     { return strconv.FormatBool(*v.p) }
func (v *boolValue) parse(s string) (any, error) {
	b, err := strconv.ParseBool(strings.TrimSpace(s))
	if err != nil {
		return nil, errors.New("not a boolean (use true or false)")
	}
	return b, nil
}
func (v *boolValue) parseList([]string) (any, error) { return nil, errNotList }
func (v *boolValue) store(x any)                     { *v.p = x.(bool) }
func (v *boolValue) typeName() string                { return "" }
func (v *boolValue) empty() bool                     { return false }

// IsBoolFlag makes "--name" alone mean "--name=true" for the flag package.
func (v *boolValue) IsBoolFlag() bool { return true }

type durationValue struct{ p *time.Duration }

func (v *durationValue) Set(s string) error { return set(v, s) }
func (v *durationValue) String() string     { return v.p.String() }
func (v *durationValue) parse(s string) (any, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return nil, errors.New("not a duration (use a number with a unit, such as 500ms, 5s or 1m30s)")
	}
	return d, nil
}
func (v *durationValue) parseList([]string) (any, error) { return nil, errNotList }
func (v *durationValue) store(x any)                     { *v.p = x.(time.Duration) }
func (v *durationValue) typeName() string                { return "duration" }
func (v *durationValue) empty() bool                     { return false }

type floatValue struct{ p *float64 }

func (v *floatValue) Set(s string) error { return set(v, s) }
func (v *floatValue) String() string     { return strconv.FormatFloat(*v.p, 'g', -1, 64) }
func (v *floatValue) parse(s string) (any, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return nil, errors.New("number out of range")
		}
		return nil, errors.New("not a number")
	}
	return f, nil
}
func (v *floatValue) parseList([]string) (any, error) { return nil, errNotList }
func (v *floatValue) store(x any)                     { *v.p = x.(float64) }
func (v *floatValue) typeName() string                { return "float" }
func (v *floatValue) empty() bool                     { return false }

// listValue is a comma-separated list. Set (the command line) replaces the
// default on its first call and appends on later ones.
type listValue struct {
	p         *[]string
	appending bool
}

func (v *listValue) Set(s string) error {
	items := splitList(s)
	if !v.appending {
		*v.p, v.appending = nil, true
	}
	*v.p = append(*v.p, items...)
	return nil
}
func (v *listValue) String() string              { return strings.Join(*v.p, ",") }
func (v *listValue) parse(s string) (any, error) { return splitList(s), nil }
func (v *listValue) parseList(items []string) (any, error) {
	out := make([]string, 0, len(items))
	for _, it := range items {
		if it = strings.TrimSpace(it); it != "" {
			out = append(out, it)
		}
	}
	return out, nil
}
func (v *listValue) store(x any)      { *v.p = x.([]string) }
func (v *listValue) typeName() string { return "list" }
func (v *listValue) empty() bool      { return len(*v.p) == 0 }

// splitList splits a comma-separated list, trimming items and dropping empty
// ones.
func splitList(s string) []string {
	out := []string{}
	for _, it := range strings.Split(s, ",") {
		if it = strings.TrimSpace(it); it != "" {
			out = append(out, it)
		}
	}
	return out
}

func set(v value, s string) error {
	x, err := v.parse(s)
	if err != nil {
		return err
	}
	v.store(x)
	return nil
}

// trapValue stands for a secret on the command line: it accepts and drops
// the value, recording only that the flag was used.
type trapValue struct{ hit *bool }

func (t trapValue) Set(string) error { *t.hit = true; return nil }
func (t trapValue) String() string   { return "" }
