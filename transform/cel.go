package transform

import (
	"fmt"
	"math/big"
	"regexp"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/ext"
	"github.com/google/cel-go/interpreter"
)

// newBaseEnv is the CEL environment every expression starts from: standard
// CEL plus the string, math and encoder extensions. Columns are added as
// variables when an expression is bound to a table.
func newBaseEnv() (*cel.Env, error) {
	return cel.NewEnv(
		ext.Strings(),
		ext.Math(),
		ext.Encoders(),
		cel.OptionalTypes(),
	)
}

// expr is a parsed (not yet type-checked) CEL expression from the config.
type expr struct {
	src  string
	ast  *cel.Ast
	env  celEnv
	line int // of the expression in the config file; 0 when unknown
}

func parseExpr(env celEnv, src string, line int) (*expr, error) {
	ast, iss := env.Parse(src)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("expression does not parse: %s", iss.Err())
	}
	return &expr{src: src, ast: ast, env: env, line: line}, nil
}

var celIdent = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

var celReserved = map[string]bool{"true": true, "false": true, "null": true, "in": true, "as": true, "break": true,
	"const": true, "continue": true, "else": true, "for": true, "function": true, "if": true, "import": true,
	"let": true, "loop": true, "package": true, "namespace": true, "return": true, "var": true, "void": true, "while": true}

func celType(t Type) *cel.Type {
	switch t.class() {
	case classBool:
		return cel.NullableType(cel.BoolType)
	case classInt:
		return cel.NullableType(cel.IntType)
	case classFloat, classDecimal:
		return cel.NullableType(cel.DoubleType)
	case classBytes:
		return cel.NullableType(cel.BytesType)
	case classDate, classTimestamptz, classTimestamp:
		return cel.TimestampType
	case classTime:
		return cel.DurationType
	}
	return cel.NullableType(cel.StringType)
}

// celVar is a column as an expression sees it.
type celVar struct {
	slot int
	cls  class
	typ  Type
}

// compiled is an expression bound to one table version.
type compiled struct {
	prg  cel.Program
	vars map[string]celVar
	out  *cel.Type
}

// bind type-checks e against the visible columns of s and records the
// columns it reads.
func (e *expr) bind(s *Schema) (*compiled, error) {
	var opts []cel.EnvOption
	cols := map[string]Col{}
	for _, c := range s.cols {
		if !celIdent.MatchString(c.Name) || celReserved[c.Name] {
			continue
		}
		opts = append(opts, cel.Variable(c.Name, celType(c.Type)))
		cols[c.Name] = c
	}
	env, err := e.env.Extend(opts...)
	if err != nil {
		return nil, err
	}
	checked, iss := env.Check(e.ast)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("expression does not type-check against %s: %s", s.src, iss.Err())
	}
	c := &compiled{vars: map[string]celVar{}, out: checked.OutputType()}
	for _, ref := range checked.NativeRep().ReferenceMap() {
		col, ok := cols[ref.Name]
		if !ok || ref.Name == "" {
			continue
		}
		if _, err := s.Column(ref.Name); err != nil {
			return nil, err
		}
		c.vars[ref.Name] = celVar{slot: col.slot, cls: col.Type.class(), typ: col.Type}
	}
	c.prg, err = env.Program(checked, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, err
	}
	return c, nil
}

// eval evaluates c over r, reusing r's activation.
func (c *compiled) eval(r *Row) (ref.Val, error) {
	r.act.r, r.act.vars = r, c.vars
	v, _, err := c.prg.Eval(&r.act)
	if err != nil {
		return nil, fmt.Errorf("expression failed: %w (a NULL column? test it with `col != null`)", err)
	}
	return v, nil
}

// activation resolves column names to the row's values; one lives in each
// pooled Row so that evaluating does not allocate one.
type activation struct {
	r    *Row
	vars map[string]celVar
}

var _ interpreter.Activation = (*activation)(nil)

func (a *activation) ResolveName(name string) (any, bool) {
	v, ok := a.vars[name]
	if !ok {
		return nil, false
	}
	return toCEL(v, a.r.vals[v.slot]), true
}

func (a *activation) Parent() interpreter.Activation { return nil }

func (a *activation) reset() { a.r, a.vars = nil, nil }

func toCEL(v celVar, x any) ref.Val {
	if x == nil {
		return types.NullValue
	}
	switch y := x.(type) {
	case bool:
		return types.Bool(y)
	case int32:
		return types.Int(y)
	case int64:
		if v.cls == classTimestamp {
			return types.Timestamp{Time: microsTime(y)}
		}
		return types.Int(y)
	case float32:
		return types.Double(y)
	case float64:
		return types.Double(y)
	case string:
		return types.String(y)
	case []byte:
		return types.Bytes(y)
	case *big.Rat:
		f, _ := y.Float64()
		return types.Double(f)
	case time.Time:
		return types.Timestamp{Time: y}
	case time.Duration:
		return types.Duration{Duration: y}
	}
	s, err := v.typ.Encode(x)
	if err != nil {
		return types.WrapErr(err)
	}
	return types.String(s)
}

// celResultType is the column type of an expression's result.
func celResultType(t *cel.Type) (Type, bool) {
	switch t.Kind() {
	case types.BoolKind:
		return typeBool, true
	case types.IntKind, types.UintKind:
		return typeBigint, true
	case types.DoubleKind:
		return typeDouble, true
	case types.StringKind:
		return typeText, true
	case types.BytesKind:
		return typeBytea, true
	case types.TimestampKind:
		return typeTimestamptz, true
	case types.OpaqueKind, types.DynKind, types.NullTypeKind, types.AnyKind:
		return Type{}, false
	}
	if t.Kind() == types.StructKind || len(t.Parameters()) > 0 {
		return Type{}, false
	}
	return Type{}, false
}

// fromCEL converts a result to the Go form of its natural Type.
func fromCEL(v ref.Val) (any, Type, error) {
	switch x := v.(type) {
	case types.Null:
		return nil, Type{}, nil
	case types.Bool:
		return bool(x), typeBool, nil
	case types.Int:
		return int64(x), typeBigint, nil
	case types.Uint:
		return int64(x), typeBigint, nil
	case types.Double:
		return float64(x), typeDouble, nil
	case types.String:
		return string(x), typeText, nil
	case types.Bytes:
		return []byte(x), typeBytea, nil
	case types.Timestamp:
		return x.Time.UTC(), typeTimestamptz, nil
	}
	return nil, Type{}, fmt.Errorf("expression result of type %s cannot be a column value", v.Type())
}

type celEnv = *cel.Env
