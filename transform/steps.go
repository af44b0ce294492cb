package transform

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
)

// The declarative steps. Each is a Step; config.go builds them from YAML.

// textOf renders a non-nil value as text: strings as they are, anything else
// as its PostgreSQL text form.
func textOf(c Col, v any) (string, error) {
	if s, ok := v.(string); ok {
		return s, nil
	}
	s, err := c.Type.Encode(v)
	if err != nil {
		return "", ColumnError(c.Name, err)
	}
	return s, nil
}

// outputs declares a step's output columns. Unless keepSource, they replace
// the source columns at the first one's position, and a one-to-one
// replacement of a key column stays a key column. With keepSource they follow
// the last source column.
func outputs(s *Schema, src []Col, names []string, typs []Type, keepSource bool) ([]Col, error) {
	if len(src) == 1 && len(names) == 1 && names[0] == src[0].Name {
		if keepSource {
			return nil, ColumnError(names[0], errors.New("keep_source needs an output column with another name"))
		}
		c, err := s.Replace(names[0], typs[0])
		return []Col{c}, err
	}
	pos := s.Index(src[0].Name)
	key := false
	if keepSource {
		pos = s.Index(src[len(src)-1].Name) + 1
	} else {
		for _, c := range src {
			i := s.Index(c.Name)
			if i < 0 {
				continue
			}
			if c.Key && len(src) == 1 && len(names) == 1 {
				key = true
				s.cols = append(s.cols[:i], s.cols[i+1:]...)
			} else if err := s.Drop(c.Name); err != nil {
				return nil, err
			}
			if i < pos {
				pos--
			}
		}
	}
	out := make([]Col, len(names))
	for i, n := range names {
		c, err := s.Add(n, typs[i], pos+i)
		if err != nil {
			return nil, err
		}
		if key {
			s.cols[pos+i].Key = true
			c.Key = true
		}
		out[i] = c
	}
	return out, nil
}

// renameTableStep routes the table to another target table.
type renameTableStep struct{ schema, table string }

func (st renameTableStep) Bind(s *Schema) (RowFunc, error) {
	if st.schema != "" {
		s.TargetSchema = st.schema
	}
	if st.table != "" {
		s.TargetTable = st.table
	}
	return nil, nil
}

// renameStep renames columns, in order.
type renameStep struct{ pairs [][2]string }

func (st renameStep) Bind(s *Schema) (RowFunc, error) {
	for _, p := range st.pairs {
		if err := s.Rename(p[0], p[1]); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// dropStep drops columns.
type dropStep struct{ names []string }

func (st dropStep) Bind(s *Schema) (RowFunc, error) {
	for _, n := range st.names {
		if err := s.Drop(n); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// keepStep keeps only the listed columns, in the listed order.
type keepStep struct{ names []string }

func (st keepStep) Bind(s *Schema) (RowFunc, error) {
	var cols []Col
	seen := map[string]bool{}
	for _, n := range st.names {
		i := s.Index(n)
		if i < 0 {
			_, err := s.Column(n)
			return nil, err
		}
		if seen[n] {
			return nil, ColumnError(n, errors.New("listed twice"))
		}
		seen[n] = true
		cols = append(cols, s.cols[i])
	}
	for _, c := range s.cols {
		if c.Key && !seen[c.Name] {
			return nil, ColumnError(c.Name, errors.New("keep must list the replication-key columns: the target applies updates and deletes by them"))
		}
	}
	s.cols = cols
	return nil, nil
}

// convertStep converts a column to another type.
type convertStep struct {
	column, into string
	to           Type
	keepSource   bool
}

func (st convertStep) Bind(s *Schema) (RowFunc, error) {
	in, err := s.Column(st.column)
	if err != nil {
		return nil, err
	}
	if _, err := convertible(in.Type, st.to); err != nil {
		return nil, ColumnError(in.Name, err)
	}
	out, err := outputs(s, []Col{in}, []string{orName(st.into, st.column)}, []Type{st.to}, st.keepSource)
	if err != nil {
		return nil, err
	}
	o := out[0]
	return func(r *Row) error {
		v, err := convert(r.Get(in), in.Type, st.to)
		if err != nil {
			return ColumnError(in.Name, err)
		}
		r.Set(o, v)
		return nil
	}, nil
}

// convertible rejects conversions that no value could make (bytea to date).
func convertible(from, to Type) (bool, error) {
	fc, tc := from.class(), to.class()
	if tc == classString || fc == classString || fc == classNumericText || fc == classOther || from.PG.OID == to.PG.OID {
		return true, nil
	}
	num := func(c class) bool {
		return c == classInt || c == classFloat || c == classDecimal || c == classNumericText
	}
	tsLike := func(c class) bool { return c == classDate || c == classTimestamp || c == classTimestamptz }
	switch {
	case num(fc) && num(tc), tsLike(fc) && tsLike(tc), fc == classBool && tc == classInt:
		return true, nil
	}
	return false, fmt.Errorf("cannot convert %s to %s", from.SQL, to.SQL)
}

func orName(into, column string) string {
	if into == "" {
		return column
	}
	return into
}

// scaleStep multiplies a number by a constant.
type scaleStep struct {
	column, into string
	by           *big.Rat
	to           *Type
	keepSource   bool
}

func (st scaleStep) Bind(s *Schema) (RowFunc, error) {
	in, err := s.Column(st.column)
	if err != nil {
		return nil, err
	}
	switch in.Type.class() {
	case classInt, classFloat, classDecimal, classNumericText:
	default:
		return nil, ColumnError(in.Name, fmt.Errorf("scale needs a number, not %s", in.Type.SQL))
	}
	to := typeNumeric
	if in.Type.class() == classFloat {
		to = typeDouble
	}
	if st.to != nil {
		to = *st.to
	}
	out, err := outputs(s, []Col{in}, []string{orName(st.into, st.column)}, []Type{to}, st.keepSource)
	if err != nil {
		return nil, err
	}
	o := out[0]
	f, _ := st.by.Float64()
	return func(r *Row) error {
		v := r.Get(in)
		if v == nil {
			r.Set(o, nil)
			return nil
		}
		if x, ok := v.(float64); ok && to.class() == classFloat {
			r.Set(o, x*f)
			return nil
		}
		if x, ok := v.(string); ok { // unconstrained numeric text
			rat, ok := new(big.Rat).SetString(x)
			if !ok {
				return ColumnError(in.Name, fmt.Errorf("cannot scale %q", x))
			}
			v = rat
		}
		rat, ok := toRat(v)
		if !ok {
			return ColumnError(in.Name, fmt.Errorf("cannot scale %v", v))
		}
		res, err := fromRat(new(big.Rat).Mul(rat, st.by), to)
		if err != nil {
			return ColumnError(in.Name, err)
		}
		r.Set(o, res)
		return nil
	}, nil
}

// timezoneStep shifts timestamps between time zones.
type timezoneStep struct {
	column, into string
	from, to     *time.Location
	keepSource   bool
}

func (st timezoneStep) Bind(s *Schema) (RowFunc, error) {
	in, err := s.Column(st.column)
	if err != nil {
		return nil, err
	}
	var outT Type
	var fn func(v any) any
	switch in.Type.class() {
	case classTimestamptz: // instant -> wall clock in `to`
		if st.to == nil {
			return nil, ColumnError(in.Name, errors.New("timezone: a timestamptz column needs `to`"))
		}
		outT = typeTimestamp
		fn = func(v any) any { return wallMicros(v.(time.Time).In(st.to)) }
	case classTimestamp: // wall clock in `from` -> instant, or wall clock in `to`
		if st.from == nil {
			return nil, ColumnError(in.Name, errors.New("timezone: a timestamp column needs `from`"))
		}
		outT = typeTimestamptz
		fn = func(v any) any {
			w := microsTime(v.(int64))
			t := time.Date(w.Year(), w.Month(), w.Day(), w.Hour(), w.Minute(), w.Second(), w.Nanosecond(), st.from)
			if st.to != nil {
				return wallMicros(t.In(st.to))
			}
			return t.UTC()
		}
		if st.to != nil {
			outT = typeTimestamp
		}
	default:
		return nil, ColumnError(in.Name, fmt.Errorf("timezone needs timestamp or timestamptz, not %s", in.Type.SQL))
	}
	out, err := outputs(s, []Col{in}, []string{orName(st.into, st.column)}, []Type{outT}, st.keepSource)
	if err != nil {
		return nil, err
	}
	o := out[0]
	return func(r *Row) error {
		v := r.Get(in)
		if v == nil {
			r.Set(o, nil)
			return nil
		}
		// ±infinity stay what they are.
		if t, ok := v.(time.Time); ok && isInfMicros(timeMicros(t)) {
			r.Set(o, timeMicros(t))
			return nil
		}
		if us, ok := v.(int64); ok && isInfMicros(us) {
			if outT.class() == classTimestamptz {
				r.Set(o, microsTime(us))
			} else {
				r.Set(o, us)
			}
			return nil
		}
		r.Set(o, fn(v))
		return nil
	}, nil
}

func isInfMicros(us int64) bool { return us == 1<<63-1 || us == -1<<63 }

// wallMicros is t's wall clock as microseconds since 1970-01-01 00:00:00.
func wallMicros(t time.Time) int64 {
	w := time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
	return timeMicros(w)
}

// jsonField is one field a json step extracts.
type jsonField struct {
	name string
	path []string
	to   Type
}

// jsonStep extracts fields of a JSON column into columns.
type jsonStep struct {
	column     string
	fields     []jsonField
	keepSource bool
}

func (st jsonStep) Bind(s *Schema) (RowFunc, error) {
	in, err := s.Column(st.column)
	if err != nil {
		return nil, err
	}
	if c := in.Type.class(); c != classString && c != classBytes {
		return nil, ColumnError(in.Name, fmt.Errorf("json needs a json, jsonb or text column, not %s", in.Type.SQL))
	}
	names := make([]string, len(st.fields))
	typs := make([]Type, len(st.fields))
	for i, f := range st.fields {
		names[i], typs[i] = f.name, f.to
	}
	out, err := outputs(s, []Col{in}, names, typs, st.keepSource)
	if err != nil {
		return nil, err
	}
	return func(r *Row) error {
		v := r.Get(in)
		var raw []byte
		switch x := v.(type) {
		case nil:
			for _, o := range out {
				r.Set(o, nil)
			}
			return nil
		case string:
			raw = []byte(x)
		case []byte:
			raw = x
		}
		var doc any
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		if err := d.Decode(&doc); err != nil {
			return ColumnError(in.Name, fmt.Errorf("not JSON: %w", err))
		}
		for i, f := range st.fields {
			val, err := jsonText(jsonPath(doc, f.path))
			if err == nil && val != nil {
				var x any
				if f.to.class() == classString {
					x = *val
				} else if x, err = parseText(*val, f.to); err != nil {
					err = fmt.Errorf("field %s: %w", strings.Join(f.path, "."), err)
				}
				r.Set(out[i], x)
			} else {
				r.Set(out[i], nil)
			}
			if err != nil {
				return ColumnError(in.Name, err)
			}
		}
		return nil
	}, nil
}

func jsonPath(doc any, path []string) any {
	for _, p := range path {
		switch x := doc.(type) {
		case map[string]any:
			doc = x[p]
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i < 0 || i >= len(x) {
				return nil
			}
			doc = x[i]
		default:
			return nil
		}
	}
	return doc
}

// jsonText is a JSON value as column text: strings unquoted, numbers and
// booleans as written, objects and arrays as compact JSON, null as nil.
func jsonText(v any) (*string, error) {
	var s string
	switch x := v.(type) {
	case nil:
		return nil, nil
	case string:
		s = x
	case json.Number:
		s = x.String()
	case bool:
		s = strconv.FormatBool(x)
	default:
		b, err := json.Marshal(x)
		if err != nil {
			return nil, err
		}
		s = string(b)
	}
	return &s, nil
}

// splitPath parses "a.b[0].c" or "a.b.0.c".
func splitPath(p string) []string {
	p = strings.NewReplacer("[", ".", "]", "").Replace(p)
	return strings.Split(strings.Trim(p, "."), ".")
}

// splitStep splits a text column into several, at a separator or by the
// groups of a regular expression.
type splitStep struct {
	column     string
	into       []string
	types      []Type
	separator  string
	re         *regexp.Regexp
	noTrim     bool
	keepSource bool
}

func (st splitStep) Bind(s *Schema) (RowFunc, error) {
	in, err := s.Column(st.column)
	if err != nil {
		return nil, err
	}
	out, err := outputs(s, []Col{in}, st.into, st.types, st.keepSource)
	if err != nil {
		return nil, err
	}
	n := len(out)
	set := func(r *Row, i int, part string) error {
		if !st.noTrim {
			part = strings.TrimSpace(part)
		}
		if st.types[i].class() == classString {
			r.Set(out[i], part)
			return nil
		}
		v, err := parseText(part, st.types[i])
		if err != nil {
			return ColumnError(in.Name, fmt.Errorf("part %d (%s): %w", i+1, st.into[i], err))
		}
		r.Set(out[i], v)
		return nil
	}
	return func(r *Row) error {
		v := r.Get(in)
		if v == nil {
			for _, o := range out {
				r.Set(o, nil)
			}
			return nil
		}
		text, err := textOf(in, v)
		if err != nil {
			return err
		}
		if st.re != nil {
			m := st.re.FindStringSubmatchIndex(text)
			for i := range n {
				if m == nil || m[2*i+2] < 0 {
					r.Set(out[i], nil)
					continue
				}
				if err := set(r, i, text[m[2*i+2]:m[2*i+3]]); err != nil {
					return err
				}
			}
			return nil
		}
		// At most n parts, the last one holding the rest (strings.SplitN
		// without its slice); missing parts are NULL.
		rest := text
		for i := range n {
			j := strings.Index(rest, st.separator)
			if i == n-1 || j < 0 {
				if err := set(r, i, rest); err != nil {
					return err
				}
				for k := i + 1; k < n; k++ {
					r.Set(out[k], nil)
				}
				return nil
			}
			if err := set(r, i, rest[:j]); err != nil {
				return err
			}
			rest = rest[j+len(st.separator):]
		}
		return nil
	}, nil
}

// combineStep joins several columns into one text column. NULLs are skipped;
// when all are NULL the result is NULL.
type combineStep struct {
	columns    []string
	into       string
	separator  string
	keepSource bool
}

func (st combineStep) Bind(s *Schema) (RowFunc, error) {
	ins := make([]Col, len(st.columns))
	for i, n := range st.columns {
		c, err := s.Column(n)
		if err != nil {
			return nil, err
		}
		ins[i] = c
	}
	out, err := outputs(s, ins, []string{st.into}, []Type{typeText}, st.keepSource)
	if err != nil {
		return nil, err
	}
	o := out[0]
	return func(r *Row) error {
		size, any := 0, false
		for _, c := range ins {
			if s, ok := r.Get(c).(string); ok {
				size += len(s) + len(st.separator)
			} else {
				size += 32
			}
		}
		var b strings.Builder
		b.Grow(size)
		for _, c := range ins {
			v := r.Get(c)
			if v == nil {
				continue
			}
			t, err := textOf(c, v)
			if err != nil {
				return err
			}
			if any {
				b.WriteString(st.separator)
			}
			b.WriteString(t)
			any = true
		}
		if !any {
			r.Set(o, nil)
			return nil
		}
		r.Set(o, b.String())
		return nil
	}, nil
}

// computeStep sets a column to the value of a CEL expression.
type computeStep struct {
	column string
	e      *expr
	to     *Type
}

func (st computeStep) Bind(s *Schema) (RowFunc, error) {
	c, err := st.e.bind(s)
	if err != nil {
		return nil, ColumnError(st.column, err)
	}
	nat, ok := celResultType(c.out)
	to := nat
	if st.to != nil {
		to = *st.to
	} else if !ok {
		return nil, ColumnError(st.column, fmt.Errorf("the expression's type is %s: give the column a `type`", c.out))
	}
	var o Col
	if s.Index(st.column) >= 0 {
		o, err = s.Replace(st.column, to)
	} else {
		o, err = s.Add(st.column, to, -1)
	}
	if err != nil {
		return nil, err
	}
	return func(r *Row) error {
		v, err := c.eval(r)
		if err != nil {
			return ColumnError(st.column, err)
		}
		x, from, err := fromCEL(v)
		if err != nil {
			return ColumnError(st.column, err)
		}
		if x != nil && (from.PG.OID != to.PG.OID || from.Typmod != to.Typmod) {
			if x, err = convert(x, from, to); err != nil {
				return ColumnError(st.column, err)
			}
		}
		r.Set(o, x)
		return nil
	}, nil
}

// filterStep keeps the rows for which a CEL expression is true.
type filterStep struct{ e *expr }

func (st filterStep) Bind(s *Schema) (RowFunc, error) {
	c, err := st.e.bind(s)
	if err != nil {
		return nil, err
	}
	if k := c.out.Kind(); k != types.BoolKind && !c.out.IsExactType(cel.NullableType(cel.BoolType)) {
		return nil, fmt.Errorf("a filter must be a bool expression, not %s", c.out)
	}
	return func(r *Row) error {
		v, err := c.eval(r)
		if err != nil {
			return err
		}
		if v != types.True {
			r.Drop()
		}
		return nil
	}, nil
}

// hashStep replaces a column by the hex HMAC-SHA256 of its text under a
// secret salt.
type hashStep struct {
	column, into string
	salt         []byte
	keepSource   bool
}

func (st hashStep) Bind(s *Schema) (RowFunc, error) {
	in, err := s.Column(st.column)
	if err != nil {
		return nil, err
	}
	out, err := outputs(s, []Col{in}, []string{orName(st.into, st.column)}, []Type{typeText}, st.keepSource)
	if err != nil {
		return nil, err
	}
	o := out[0]
	pool := sync.Pool{New: func() any { return &hasher{h: hmac.New(sha256.New, st.salt)} }}
	return func(r *Row) error {
		v := r.Get(in)
		if v == nil {
			r.Set(o, nil)
			return nil
		}
		h := pool.Get().(*hasher)
		defer pool.Put(h)
		h.h.Reset()
		switch x := v.(type) {
		case string:
			h.buf = append(h.buf[:0], x...)
		case []byte:
			h.buf = append(h.buf[:0], x...)
		default:
			t, err := textOf(in, v)
			if err != nil {
				return err
			}
			h.buf = append(h.buf[:0], t...)
		}
		h.h.Write(h.buf)
		sum := h.h.Sum(h.sum[:0])
		r.Set(o, hex.EncodeToString(sum))
		return nil
	}, nil
}

type hasher struct {
	h   hash.Hash
	buf []byte
	sum [sha256.Size]byte
}

// maskStep redacts a column: it keeps the first and last characters asked
// for and replaces the rest with a mask character, or replaces the whole
// value with a constant (NULL when the constant is null).
type maskStep struct {
	column              string
	keepFirst, keepLast int
	char                string
	with                *string // replacement; set by `with`
	withSet             bool
}

func (st maskStep) Bind(s *Schema) (RowFunc, error) {
	in, err := s.Column(st.column)
	if err != nil {
		return nil, err
	}
	if in.Key {
		return nil, ColumnError(in.Name, errors.New("cannot mask a replication-key column: masked keys collide (hash it instead)"))
	}
	o, err := s.Replace(in.Name, typeText)
	if err != nil {
		return nil, err
	}
	return func(r *Row) error {
		v := r.Get(in)
		if v == nil {
			r.Set(o, nil)
			return nil
		}
		if st.withSet {
			if st.with == nil {
				r.Set(o, nil)
			} else {
				r.Set(o, *st.with)
			}
			return nil
		}
		t, err := textOf(in, v)
		if err != nil {
			return err
		}
		rs := []rune(t)
		var b strings.Builder
		for i, c := range rs {
			if i < st.keepFirst || i >= len(rs)-st.keepLast {
				b.WriteRune(c)
			} else {
				b.WriteString(st.char)
			}
		}
		r.Set(o, b.String())
		return nil
	}, nil
}
