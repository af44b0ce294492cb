package transform

import (
	"errors"
	"fmt"
	"math/big"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"
	_ "time/tzdata" // time zones without the system's tzdata

	"gopkg.in/yaml.v3"
)

// Config is a parsed transforms file (see docs/TRANSFORMS.md). Build it with
// LoadConfig or ParseConfig and turn it into a Pipeline with Compile.
type Config struct {
	// Schemas renames source schemas for every table in them.
	Schemas map[string]string
	// Tables are the per-table pipelines, by source "schema.table".
	Tables map[string]*TableConfig
	file   string
}

// TableConfig is one source table's pipeline.
type TableConfig struct {
	// To routes the table to another target table: "table" or "schema.table".
	To    string
	Steps []StepConfig
	line  int
}

// StepConfig is one step: its kind (the YAML key) and its settings, which
// Compile decodes into the kind's settings struct (see buildStep).
type StepConfig struct {
	Kind string
	Line int
	node *yaml.Node
}

// LoadConfig reads and parses a transforms file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("transforms: %w", err)
	}
	return ParseConfig(b, path)
}

// fileYAML is the transforms file.
type fileYAML struct {
	Schemas map[string]string `yaml:"schemas"`
	Tables  tablesYAML        `yaml:"tables"`
}

// tableYAML is one table of the file.
type tableYAML struct {
	To    string    `yaml:"to"`
	Steps stepsYAML `yaml:"steps"`
}

// tablesYAML are the file's tables, in file order, each with its line; a
// table named twice (also as "t" and "public.t") is an error.
type tablesYAML struct {
	names  []string
	tables []*TableConfig
}

func (ts *tablesYAML) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return at(n, errors.New("want a map"))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := qualify(k.Value)
		if seen[key] {
			return at(k, fmt.Errorf("table %s listed twice", key))
		}
		seen[key] = true
		var t tableYAML
		if err := decodeStrict(v, &t, "key"); err != nil {
			return at(k, err)
		}
		ts.names = append(ts.names, key)
		ts.tables = append(ts.tables, &TableConfig{To: t.To, Steps: t.Steps, line: v.Line})
	}
	return nil
}

// stepsYAML is a table's steps: each a map with one key, the step's kind.
type stepsYAML []StepConfig

func (ss *stepsYAML) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.SequenceNode {
		return errors.New("steps: want a list")
	}
	for _, sn := range n.Content {
		if sn.Kind != yaml.MappingNode || len(sn.Content) != 2 {
			return at(sn, errors.New("a step is a map with one key, its kind (filter, split, ...)"))
		}
		*ss = append(*ss, StepConfig{Kind: sn.Content[0].Value, Line: sn.Line, node: sn.Content[1]})
	}
	return nil
}

// ParseConfig parses a transforms file's content; name is used in errors.
// Unknown keys are errors that name their line and column.
func ParseConfig(data []byte, name string) (*Config, error) {
	if name == "" {
		name = "transforms"
	}
	cfg := &Config{Schemas: map[string]string{}, Tables: map[string]*TableConfig{}, file: name}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(doc.Content) == 0 {
		return cfg, nil
	}
	var f fileYAML
	if err := decodeStrict(doc.Content[0], &f, "key"); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if f.Schemas != nil {
		cfg.Schemas = f.Schemas
	}
	for i, t := range f.Tables.tables {
		cfg.Tables[f.Tables.names[i]] = t
	}
	return cfg, nil
}

type lineError struct {
	line, col int
	err       error
}

func (e *lineError) Error() string { return fmt.Sprintf("line %d column %d: %v", e.line, e.col, e.err) }
func (e *lineError) Unwrap() error { return e.err }

// at names n's line and column in err, unless err already names a place.
func at(n *yaml.Node, err error) error {
	var le *lineError
	if err == nil || errors.As(err, &le) {
		return err
	}
	return &lineError{line: n.Line, col: n.Column, err: err}
}

// decodeStrict decodes the mapping n into the struct v, whose fields' yaml
// tags are the only keys allowed (yaml.v3's KnownFields, with the key's
// line and column and the keys that are allowed); noun names a key in
// errors ("key", "setting"). Each value is decoded into its field on its
// own, so that an error names the key's place unless it names its own; a
// field with UnmarshalYAML gets null values too (yaml.v3 skips them), so a
// key given is always a key given. Fields of type setting[T] learn their
// key.
func decodeStrict(n *yaml.Node, v any, noun string) error {
	if n.Kind != yaml.MappingNode {
		return at(n, errors.New("want a map"))
	}
	rv := reflect.ValueOf(v).Elem()
	rt := rv.Type()
	var known []string
	for i := range rt.NumField() {
		known = append(known, strings.Split(rt.Field(i).Tag.Get("yaml"), ",")[0])
		if s, ok := rv.Field(i).Addr().Interface().(interface{ setKey(string) }); ok {
			s.setKey(known[i])
		}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		f := indexOf(known, kn.Value)
		switch {
		case f >= 0:
		case kn.Value == "salt" && noun == "setting":
			return at(kn, errors.New("a salt must not be written in the config: use salt_env or salt_file"))
		default:
			return at(kn, fmt.Errorf("unknown %s %q (want %s)", noun, kn.Value, strings.Join(known, ", ")))
		}
		var err error
		if u, ok := rv.Field(f).Addr().Interface().(yaml.Unmarshaler); ok {
			err = u.UnmarshalYAML(vn)
		} else {
			err = vn.Decode(rv.Field(f).Addr().Interface())
		}
		if err != nil {
			return at(kn, err)
		}
	}
	return nil
}

// setting is one setting of a step: its value, where it is in the file (nil
// when absent) and why its value does not decode, which the step reports
// with the setting's key and place.
type setting[T any] struct {
	Value T
	node  *yaml.Node
	key   string
	err   error
}

func (s *setting[T]) UnmarshalYAML(n *yaml.Node) error {
	s.node, s.err = n, n.Decode(&s.Value)
	return nil
}

func (s *setting[T]) setKey(k string) { s.key = k }

// set reports whether the setting is in the file.
func (s *setting[T]) set() bool { return s.node != nil }

// get is the value, or an error naming the key: the value does not decode,
// or it is required and absent.
func (s *setting[T]) get(required bool) (T, error) {
	var zero T
	switch {
	case s.node == nil && required:
		return zero, fmt.Errorf("%s: required", s.key)
	case s.err != nil:
		return zero, at(s.node, fmt.Errorf("%s: %w", s.key, s.err))
	}
	return s.Value, nil
}

// str is a string setting; a required one must not be empty.
func str(s setting[string], required bool) (string, error) {
	v, err := s.get(required)
	if err == nil && required && v == "" {
		return "", at(s.node, fmt.Errorf("%s: required", s.key))
	}
	return v, err
}

// strs is a list of names; a required one must not be empty.
func strs(s setting[[]string], required bool) ([]string, error) {
	if s.set() && s.err != nil {
		return nil, at(s.node, fmt.Errorf("%s: want a list of names: %w", s.key, s.err))
	}
	v, err := s.get(required)
	if err == nil && required && len(v) == 0 {
		return nil, at(s.node, fmt.Errorf("%s: required", s.key))
	}
	return v, err
}

// typ is an optional SQL type setting; nil when absent.
func typ(s setting[string]) (*Type, error) {
	v, err := str(s, false)
	if err != nil || v == "" {
		return nil, err
	}
	t, err := ParseType(v)
	if err != nil {
		return nil, at(s.node, fmt.Errorf("%s: %w", s.key, err))
	}
	return &t, nil
}

// typesFor reads an optional map of output column types, text by default.
func typesFor(s setting[map[string]string], names []string) ([]Type, error) {
	out := make([]Type, len(names))
	for i := range out {
		out[i] = typeText
	}
	if !s.set() {
		return out, nil
	}
	if s.err != nil {
		return nil, at(s.node, fmt.Errorf("types: want a map of column: type: %w", s.err))
	}
	for col, ts := range s.Value {
		i := indexOf(names, col)
		if i < 0 {
			return nil, at(s.node, fmt.Errorf("types: %q is not an output column", col))
		}
		t, err := ParseType(ts)
		if err != nil {
			return nil, at(s.node, fmt.Errorf("types: %s: %w", col, err))
		}
		out[i] = t
	}
	return out, nil
}

// pairs is a map setting whose order matters (rename's old: new, json's
// column: path): its keys and string values in file order. A value that is
// not a non-empty string is an error at its key, saying what it should be.
type pairs struct {
	keys, values []string
	node         *yaml.Node
	want         string
}

func (p *pairs) UnmarshalYAML(n *yaml.Node) error {
	p.node = n
	if n.Kind != yaml.MappingNode {
		return nil // reported by the step, which knows what it wants
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		var v string
		if err := n.Content[i+1].Decode(&v); err != nil || v == "" {
			return at(n.Content[i], errors.New(p.want))
		}
		p.keys, p.values = append(p.keys, n.Content[i].Value), append(p.values, v)
	}
	return nil
}

func indexOf(s []string, x string) int {
	for i, v := range s {
		if v == x {
			return i
		}
	}
	return -1
}

// secret reads a salt from salt_env or salt_file.
func secret(saltEnv, saltFile setting[string], getenv func(string) string) ([]byte, error) {
	env, err := str(saltEnv, false)
	if err != nil {
		return nil, err
	}
	file, err := str(saltFile, false)
	if err != nil {
		return nil, err
	}
	switch {
	case env != "" && file != "":
		return nil, errors.New("give salt_env or salt_file, not both")
	case env != "":
		v := getenv(env)
		if v == "" {
			return nil, fmt.Errorf("salt_env: environment variable %s is empty or not set", env)
		}
		return []byte(v), nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("salt_file: %w", err)
		}
		b = []byte(strings.TrimRight(string(b), "\r\n"))
		if len(b) == 0 {
			return nil, fmt.Errorf("salt_file %s is empty", file)
		}
		return b, nil
	}
	return nil, errors.New("a salt is required: salt_env (an environment variable) or salt_file")
}

// Compile builds a Pipeline from cfg: it parses every expression (syntax
// errors name the config line and the position in the expression), reads
// the salts, parses types, patterns and time zones. Checking the steps
// against tables' schemas happens in Pipeline.Check and when a table's first
// event arrives. opts add Go steps.
func Compile(cfg *Config, opts ...Option) (*Pipeline, error) {
	return compile(cfg, os.Getenv, opts...)
}

func compile(cfg *Config, getenv func(string) string, opts ...Option) (*Pipeline, error) {
	o := &options{custom: map[string]Step{}, tables: map[string][]Step{}}
	for _, opt := range opts {
		opt(o)
	}
	if cfg == nil {
		cfg = &Config{}
	}
	env, err := newBaseEnv()
	if err != nil {
		return nil, err
	}
	p := &Pipeline{tables: map[string]*tableSteps{}, schemas: map[string]string{}, bound: map[int]*boundOrErr{}}
	for k, v := range cfg.Schemas {
		p.schemas[k] = v
	}
	names := make([]string, 0, len(cfg.Tables))
	for n := range cfg.Tables {
		names = append(names, n)
	}
	sort.Strings(names)
	var errs []error
	for _, name := range names {
		tc := cfg.Tables[name]
		ts := &tableSteps{source: name}
		for i, sc := range tc.Steps {
			label := fmt.Sprintf("step %d %q (%s line %d)", i+1, sc.Kind, cfg.file, sc.Line)
			st, err := buildStep(sc, env, getenv, o)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: table %s %s: %w", cfg.file, name, label, err))
				continue
			}
			ts.steps = append(ts.steps, labeled{label: label, step: st})
		}
		if tc.To != "" {
			schema, table, ok := strings.Cut(tc.To, ".")
			if !ok {
				schema, table = "", tc.To
			}
			ts.steps = append(ts.steps, labeled{label: fmt.Sprintf("to %q (%s line %d)", tc.To, cfg.file, tc.line),
				step: renameTableStep{schema: schema, table: table}})
		}
		p.tables[name] = ts
	}
	for table, steps := range o.tables {
		ts := p.tables[table]
		if ts == nil {
			ts = &tableSteps{source: table}
			p.tables[table] = ts
		}
		for i, st := range steps {
			ts.steps = append(ts.steps, labeled{label: fmt.Sprintf("Go step %d", i+1), step: st})
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

var (
	identRe = regexp.MustCompile(`^[^\s.]+$`)
)

// The settings of each kind of step, as written in the file. Their fields'
// order is the order of "want ..." in errors.
type (
	filterYAML struct {
		Expr setting[string] `yaml:"expr"`
	}
	computeYAML struct {
		Column setting[string] `yaml:"column"`
		Expr   setting[string] `yaml:"expr"`
		Type   setting[string] `yaml:"type"`
	}
	tableStepYAML struct {
		Schema setting[string] `yaml:"schema"`
		Name   setting[string] `yaml:"name"`
	}
	convertYAML struct {
		Column     setting[string] `yaml:"column"`
		To         setting[string] `yaml:"to"`
		Into       setting[string] `yaml:"into"`
		KeepSource setting[bool]   `yaml:"keep_source"`
	}
	scaleYAML struct {
		Column     setting[string] `yaml:"column"`
		By         setting[string] `yaml:"by"`
		To         setting[string] `yaml:"to"`
		Into       setting[string] `yaml:"into"`
		KeepSource setting[bool]   `yaml:"keep_source"`
	}
	timezoneYAML struct {
		Column     setting[string] `yaml:"column"`
		From       setting[string] `yaml:"from"`
		To         setting[string] `yaml:"to"`
		Into       setting[string] `yaml:"into"`
		KeepSource setting[bool]   `yaml:"keep_source"`
	}
	jsonYAML struct {
		Column     setting[string]            `yaml:"column"`
		Fields     setting[pairs]             `yaml:"fields"`
		Types      setting[map[string]string] `yaml:"types"`
		KeepSource setting[bool]              `yaml:"keep_source"`
	}
	splitYAML struct {
		Column     setting[string]            `yaml:"column"`
		Into       setting[[]string]          `yaml:"into"`
		Separator  setting[string]            `yaml:"separator"`
		Regex      setting[string]            `yaml:"regex"`
		JSON       setting[bool]              `yaml:"json"`
		Types      setting[map[string]string] `yaml:"types"`
		Trim       setting[bool]              `yaml:"trim"`
		KeepSource setting[bool]              `yaml:"keep_source"`
	}
	combineYAML struct {
		Columns    setting[[]string] `yaml:"columns"`
		Into       setting[string]   `yaml:"into"`
		Separator  setting[string]   `yaml:"separator"`
		KeepSource setting[bool]     `yaml:"keep_source"`
	}
	hashYAML struct {
		Column     setting[string] `yaml:"column"`
		Into       setting[string] `yaml:"into"`
		SaltEnv    setting[string] `yaml:"salt_env"`
		SaltFile   setting[string] `yaml:"salt_file"`
		KeepSource setting[bool]   `yaml:"keep_source"`
	}
	maskYAML struct {
		Column    setting[string]  `yaml:"column"`
		KeepFirst setting[int]     `yaml:"keep_first"`
		KeepLast  setting[int]     `yaml:"keep_last"`
		Char      setting[string]  `yaml:"char"`
		With      setting[*string] `yaml:"with"`
	}
)

// settings decodes a step's settings into v (see decodeStrict).
func settings(n *yaml.Node, v any) error { return decodeStrict(n, v, "setting") }

func buildStep(sc StepConfig, env celEnv, getenv func(string) string, o *options) (Step, error) {
	n := sc.node
	switch sc.Kind {
	case "filter":
		var c filterYAML
		if n.Kind == yaml.ScalarNode {
			c.Expr.UnmarshalYAML(n) //nolint:errcheck // it keeps its error for exprField
			c.Expr.setKey("expr")
		} else if err := settings(n, &c); err != nil {
			return nil, err
		}
		e, err := exprField(env, c.Expr)
		if err != nil {
			return nil, err
		}
		return filterStep{e: e}, nil
	case "compute":
		var c computeYAML
		if err := settings(n, &c); err != nil {
			return nil, err
		}
		col, err := str(c.Column, true)
		if err != nil {
			return nil, err
		}
		e, err := exprField(env, c.Expr)
		if err != nil {
			return nil, err
		}
		t, err := typ(c.Type)
		if err != nil {
			return nil, err
		}
		return computeStep{column: col, e: e, to: t}, nil
	case "rename":
		if n.Kind != yaml.MappingNode {
			return nil, at(n, errors.New("rename: want a map of old: new column names"))
		}
		p := pairs{want: "want a column name"}
		if err := n.Decode(&p); err != nil {
			return nil, err
		}
		var st renameStep
		for i := range p.keys {
			st.pairs = append(st.pairs, [2]string{p.keys[i], p.values[i]})
		}
		return st, nil
	case "drop", "keep":
		var names []string
		if err := n.Decode(&names); err != nil || len(names) == 0 {
			return nil, at(n, fmt.Errorf("%s: want a list of column names", sc.Kind))
		}
		if sc.Kind == "drop" {
			return dropStep{names: names}, nil
		}
		return keepStep{names: names}, nil
	case "table":
		var c tableStepYAML
		if err := settings(n, &c); err != nil {
			return nil, err
		}
		schema, err := str(c.Schema, false)
		if err != nil {
			return nil, err
		}
		name, err := str(c.Name, false)
		if err != nil {
			return nil, err
		}
		if schema == "" && name == "" {
			return nil, errors.New("table: give schema, name or both")
		}
		return renameTableStep{schema: schema, table: name}, nil
	case "convert":
		var c convertYAML
		if err := settings(n, &c); err != nil {
			return nil, err
		}
		col, into, keep, err := common(c.Column, c.Into, c.KeepSource)
		if err != nil {
			return nil, err
		}
		t, err := typ(c.To)
		if err != nil {
			return nil, err
		}
		if t == nil {
			return nil, errors.New("to: required (the SQL type to convert to)")
		}
		return convertStep{column: col, into: into, to: *t, keepSource: keep}, nil
	case "scale":
		var c scaleYAML
		if err := settings(n, &c); err != nil {
			return nil, err
		}
		col, into, keep, err := common(c.Column, c.Into, c.KeepSource)
		if err != nil {
			return nil, err
		}
		by, err := str(c.By, true)
		if err != nil {
			return nil, err
		}
		r, ok := new(big.Rat).SetString(by)
		if !ok {
			return nil, at(c.By.node, fmt.Errorf("by: %q is not a number", by))
		}
		t, err := typ(c.To)
		if err != nil {
			return nil, err
		}
		return scaleStep{column: col, into: into, by: r, to: t, keepSource: keep}, nil
	case "timezone":
		var c timezoneYAML
		if err := settings(n, &c); err != nil {
			return nil, err
		}
		col, into, keep, err := common(c.Column, c.Into, c.KeepSource)
		if err != nil {
			return nil, err
		}
		st := timezoneStep{column: col, into: into, keepSource: keep}
		for _, z := range []struct {
			s   setting[string]
			dst **time.Location
		}{{c.From, &st.from}, {c.To, &st.to}} {
			name, err := str(z.s, false)
			if err != nil {
				return nil, err
			}
			if name == "" {
				continue
			}
			if *z.dst, err = time.LoadLocation(name); err != nil {
				return nil, at(z.s.node, fmt.Errorf("%s: %w", z.s.key, err))
			}
		}
		if st.from == nil && st.to == nil {
			return nil, errors.New("timezone: give from, to or both")
		}
		return st, nil
	case "json":
		c := jsonYAML{Fields: setting[pairs]{Value: pairs{want: "want a JSON path such as customer.address[0].city"}}}
		if err := settings(n, &c); err != nil {
			return nil, err
		}
		col, err := str(c.Column, true)
		if err != nil {
			return nil, err
		}
		keep, err := c.KeepSource.get(false)
		if err != nil {
			return nil, err
		}
		if !c.Fields.set() {
			return nil, errors.New("fields: required (a map of column: path)")
		}
		if err := c.Fields.err; err != nil {
			return nil, at(c.Fields.node, err)
		}
		if c.Fields.node.Kind != yaml.MappingNode {
			return nil, at(c.Fields.node, errors.New("want a map"))
		}
		names, paths := c.Fields.Value.keys, c.Fields.Value.values
		typs, err := typesFor(c.Types, names)
		if err != nil {
			return nil, err
		}
		st := jsonStep{column: col, keepSource: keep}
		for i := range names {
			st.fields = append(st.fields, jsonField{name: names[i], path: splitPath(paths[i]), to: typs[i]})
		}
		return st, nil
	case "split":
		var c splitYAML
		if err := settings(n, &c); err != nil {
			return nil, err
		}
		col, err := str(c.Column, true)
		if err != nil {
			return nil, err
		}
		into, err := strs(c.Into, true)
		if err != nil {
			return nil, err
		}
		keep, err := c.KeepSource.get(false)
		if err != nil {
			return nil, err
		}
		typs, err := typesFor(c.Types, into)
		if err != nil {
			return nil, err
		}
		isJSON, err := c.JSON.get(false)
		if err != nil {
			return nil, err
		}
		sep, err := str(c.Separator, false)
		if err != nil {
			return nil, err
		}
		re, err := str(c.Regex, false)
		if err != nil {
			return nil, err
		}
		if isJSON {
			if sep != "" || re != "" {
				return nil, errors.New("split: json, separator and regex exclude each other")
			}
			st := jsonStep{column: col, keepSource: keep}
			for i, name := range into {
				st.fields = append(st.fields, jsonField{name: name, path: []string{name}, to: typs[i]})
			}
			return st, nil
		}
		st := splitStep{column: col, into: into, types: typs, separator: sep, keepSource: keep}
		if c.Trim.set() {
			t, err := c.Trim.get(false)
			if err != nil {
				return nil, err
			}
			st.noTrim = !t
		}
		switch {
		case sep != "" && re != "":
			return nil, errors.New("split: give separator or regex, not both")
		case re != "":
			if st.re, err = regexp.Compile(re); err != nil {
				return nil, at(c.Regex.node, fmt.Errorf("regex: %w", err))
			}
			if st.re.NumSubexp() != len(into) {
				return nil, at(c.Regex.node, fmt.Errorf("regex has %d groups for %d columns", st.re.NumSubexp(), len(into)))
			}
		case sep == "":
			return nil, errors.New("split: give separator, regex or json: true")
		}
		return st, nil
	case "combine":
		var c combineYAML
		if err := settings(n, &c); err != nil {
			return nil, err
		}
		cols, err := strs(c.Columns, true)
		if err != nil {
			return nil, err
		}
		into, err := str(c.Into, true)
		if err != nil {
			return nil, err
		}
		sep, err := str(c.Separator, false)
		if err != nil {
			return nil, err
		}
		keep, err := c.KeepSource.get(false)
		if err != nil {
			return nil, err
		}
		return combineStep{columns: cols, into: into, separator: sep, keepSource: keep}, nil
	case "hash":
		var c hashYAML
		if err := settings(n, &c); err != nil {
			return nil, err
		}
		col, into, keep, err := common(c.Column, c.Into, c.KeepSource)
		if err != nil {
			return nil, err
		}
		salt, err := secret(c.SaltEnv, c.SaltFile, getenv)
		if err != nil {
			return nil, err
		}
		return hashStep{column: col, into: into, salt: salt, keepSource: keep}, nil
	case "mask":
		var c maskYAML
		if err := settings(n, &c); err != nil {
			return nil, err
		}
		col, err := str(c.Column, true)
		if err != nil {
			return nil, err
		}
		st := maskStep{column: col, char: "*"}
		for _, k := range []struct {
			s   setting[int]
			dst *int
		}{{c.KeepFirst, &st.keepFirst}, {c.KeepLast, &st.keepLast}} {
			if k.s.set() {
				if k.s.err != nil || k.s.Value < 0 {
					return nil, at(k.s.node, fmt.Errorf("%s: want a count", k.s.key))
				}
				*k.dst = k.s.Value
			}
		}
		if ch, err := str(c.Char, false); err != nil {
			return nil, err
		} else if ch != "" {
			st.char = ch
		}
		if c.With.set() {
			st.withSet = true
			if c.With.err != nil {
				return nil, at(c.With.node, fmt.Errorf("with: %w", c.With.err))
			}
			st.with = c.With.Value // nil for null: the column becomes NULL
		}
		return st, nil
	case "custom":
		var name string
		if err := n.Decode(&name); err != nil || name == "" {
			return nil, at(n, errors.New("custom: want the name given to transform.WithStep"))
		}
		st := o.custom[name]
		if st == nil {
			return nil, at(n, fmt.Errorf("custom: no step %q (register it with transform.WithStep)", name))
		}
		return st, nil
	}
	return nil, fmt.Errorf("unknown step %q (want filter, compute, rename, drop, keep, table, convert, scale, "+
		"timezone, json, split, combine, hash, mask, custom)", sc.Kind)
}

// common reads column, into and keep_source.
func common(column, intoS setting[string], keepS setting[bool]) (col, into string, keep bool, err error) {
	if col, err = str(column, true); err != nil {
		return
	}
	if into, err = str(intoS, false); err != nil {
		return
	}
	if into != "" && !identRe.MatchString(into) {
		err = at(intoS.node, fmt.Errorf("into: %q is not a column name", into))
		return
	}
	keep, err = keepS.get(false)
	return
}

// exprField parses the CEL expression of setting s. Syntax errors name the
// line in the config and the position in the expression.
func exprField(env celEnv, s setting[string]) (*expr, error) {
	if !s.set() {
		return nil, fmt.Errorf("%s: required", s.key)
	}
	if s.err != nil || strings.TrimSpace(s.Value) == "" {
		return nil, at(s.node, fmt.Errorf("%s: want an expression", s.key))
	}
	e, err := parseExpr(env, s.Value, s.node.Line)
	if err != nil {
		return nil, at(s.node, err)
	}
	return e, nil
}
