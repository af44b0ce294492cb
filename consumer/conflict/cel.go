package conflict

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
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

// exprValue is one column's value computed by an expression.
type exprValue struct {
	col   int
	value *string // nil is NULL
}

// evalGroup evaluates a custom group's expression over local, remote_before
// and remote_after (whole rows; nil rows are empty maps) and returns the
// group's columns it sets, in column order. The expression must return a
// map whose keys are columns of the group.
func (p *program) evalGroup(cols []column, g *group, local, before, after []*string) ([]exprValue, error) {
	v, err := p.eval(map[string]any{"local": celRow(cols, local), "remote_before": celRow(cols, before),
		"remote_after": celRow(cols, after)})
	if err != nil {
		return nil, err
	}
	mp, ok := v.(traits.Mapper)
	if !ok {
		return nil, fmt.Errorf("want a map of column name to value, got %s", v.Type())
	}
	inGroup := map[string]int{}
	for _, i := range g.cols {
		inGroup[cols[i].name] = i
	}
	var out []exprValue
	for it := mp.Iterator(); it.HasNext() == types.True; {
		k := it.Next()
		name, ok := k.(types.String)
		if !ok {
			return nil, fmt.Errorf("map key %v is not a column name", k)
		}
		i, ok := inGroup[string(name)]
		if !ok {
			return nil, fmt.Errorf("column %q is not in the group (%v)", name, slices.Sorted(maps.Keys(inGroup)))
		}
		val, err := textOf(mp.Get(k))
		if err != nil {
			return nil, fmt.Errorf("column %q: %w", name, err)
		}
		out = append(out, exprValue{col: i, value: val})
	}
	slices.SortFunc(out, func(a, b exprValue) int { return a.col - b.col })
	return out, nil
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
