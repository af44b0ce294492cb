package conflict

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/ext"
)

var errEOF = io.EOF

// program is a compiled CEL expression.
type program struct {
	src string
	prg cel.Program
}

// compileCEL compiles src with the named map(string, dyn) variables (and
// string variables in strVars).
func compileCEL(src string, mapVars []string, strVars ...string) (*program, error) {
	opts := []cel.EnvOption{ext.Strings(), ext.Math(), cel.OptionalTypes()}
	for _, v := range mapVars {
		opts = append(opts, cel.Variable(v, cel.MapType(cel.StringType, cel.DynType)))
	}
	for _, v := range strVars {
		opts = append(opts, cel.Variable(v, cel.StringType))
	}
	env, err := cel.NewEnv(opts...)
	if err != nil {
		return nil, err
	}
	ast, iss := env.Compile(src)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("expression %q: %s", src, iss.Err())
	}
	prg, err := env.Program(ast)
	if err != nil {
		return nil, fmt.Errorf("expression %q: %w", src, err)
	}
	return &program{src: src, prg: prg}, nil
}

func (p *program) eval(vars map[string]any) (ref.Val, error) {
	v, _, err := p.prg.Eval(vars)
	if err != nil {
		return nil, fmt.Errorf("expression %q: %w", p.src, err)
	}
	return v, nil
}

// celRow converts a row of canonical PostgreSQL text values to the map an
// expression sees: integer types as int, float and numeric types as double,
// boolean as bool, everything else (dates and times included) as the
// PostgreSQL text form; NULL as null. A nil row is an empty map.
func celRow(cols []column, vals []*string) map[string]any {
	m := make(map[string]any, len(cols))
	if vals == nil {
		return m
	}
	for i, c := range cols {
		m[c.name] = celValue(c.class, vals[i])
	}
	return m
}

func celValue(cl class, s *string) any {
	if s == nil {
		return types.NullValue
	}
	switch cl {
	case classInt:
		if n, err := strconv.ParseInt(*s, 10, 64); err == nil {
			return n
		}
	case classFloat:
		if f, err := strconv.ParseFloat(*s, 64); err == nil {
			return f
		}
	case classBool:
		return *s == "t" || *s == "true"
	}
	return *s
}

// textOf converts an expression's value to a PostgreSQL text literal; nil
// for null.
func textOf(v ref.Val) (*string, error) {
	var s string
	switch x := v.(type) {
	case types.Null:
		return nil, nil
	case types.Bool:
		s = strconv.FormatBool(bool(x))
	case types.Int:
		s = strconv.FormatInt(int64(x), 10)
	case types.Uint:
		s = strconv.FormatUint(uint64(x), 10)
	case types.Double:
		s = strconv.FormatFloat(float64(x), 'g', -1, 64)
	case types.String:
		s = string(x)
	case types.Timestamp:
		s = x.Time.UTC().Format("2006-01-02 15:04:05.999999Z07:00")
	default:
		return nil, fmt.Errorf("a value of type %s cannot be a column value", v.Type())
	}
	return &s, nil
}

// class is how a column's values are compared and shown to expressions.
type class int

const (
	classText class = iota
	classInt
	classFloat
	classBool
)

func classOf(sqlType string) class {
	t := strings.ToLower(sqlType)
	switch {
	case t == "smallint" || t == "integer" || t == "bigint" || t == "int2" || t == "int4" || t == "int8":
		return classInt
	case t == "real" || t == "double precision" || strings.HasPrefix(t, "numeric") || strings.HasPrefix(t, "decimal"):
		return classFloat
	case t == "boolean" || t == "bool":
		return classBool
	}
	return classText
}

// additiveOK reports whether additive resolution (a + (b - c)) makes sense
// for the type.
func additiveOK(sqlType string) bool {
	t := strings.ToLower(sqlType)
	return classOf(t) == classInt || classOf(t) == classFloat || t == "money" || strings.HasPrefix(t, "interval")
}

// isTimestamp reports whether a timestamp_column may have the type.
func isTimestamp(sqlType string) bool {
	t := strings.ToLower(sqlType)
	return strings.HasPrefix(t, "timestamp")
}

// timestampLayouts are PostgreSQL's ISO output forms of timestamptz (offsets
// of hours, hours and minutes, or seconds) and of timestamp.
var timestampLayouts = []string{"2006-01-02 15:04:05.999999-07", "2006-01-02 15:04:05.999999-07:00",
	"2006-01-02 15:04:05.999999-07:00:00", "2006-01-02 15:04:05.999999"}

// parseTimestamp parses a timestamp or timestamptz value as the target
// prints it (DateStyle ISO); a timestamp without time zone is taken as UTC.
func parseTimestamp(s string) (time.Time, error) {
	for _, l := range timestampLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not an ISO timestamp (the target's DateStyle must be ISO)", s)
}
