package transform

import (
	"errors"
	"fmt"
	"math/big"
	"os"
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

// StepConfig is one step: its kind (the YAML key) and its settings.
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

// ParseConfig parses a transforms file's content; name is used in errors.
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
	root := doc.Content[0]
	if err := mapping(root, func(k string, v *yaml.Node) error {
		switch k {
		case "schemas":
			return v.Decode(&cfg.Schemas)
		case "tables":
			return mapping(v, func(table string, tv *yaml.Node) error {
				tc := &TableConfig{line: tv.Line}
				key := qualify(table)
				if _, dup := cfg.Tables[key]; dup {
					return fmt.Errorf("table %s listed twice", key)
				}
				cfg.Tables[key] = tc
				return mapping(tv, func(k string, v *yaml.Node) error {
					switch k {
					case "to":
						return v.Decode(&tc.To)
					case "steps":
						if v.Kind != yaml.SequenceNode {
							return errors.New("steps: want a list")
						}
						for _, sn := range v.Content {
							if sn.Kind != yaml.MappingNode || len(sn.Content) != 2 {
								return at(sn, errors.New("a step is a map with one key, its kind (filter, split, ...)"))
							}
							tc.Steps = append(tc.Steps, StepConfig{Kind: sn.Content[0].Value, Line: sn.Line, node: sn.Content[1]})
						}
						return nil
					}
					return fmt.Errorf("unknown key %q (want to, steps)", k)
				})
			})
		}
		return fmt.Errorf("unknown key %q (want schemas, tables)", k)
	}); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return cfg, nil
}

type lineError struct {
	line, col int
	err       error
}

func (e *lineError) Error() string { return fmt.Sprintf("line %d column %d: %v", e.line, e.col, e.err) }
func (e *lineError) Unwrap() error { return e.err }

func at(n *yaml.Node, err error) error {
	var le *lineError
	if err == nil || errors.As(err, &le) {
		return err
	}
	return &lineError{line: n.Line, col: n.Column, err: err}
}

// mapping calls f for each key of a mapping node, in order.
func mapping(n *yaml.Node, f func(k string, v *yaml.Node) error) error {
	if n.Kind != yaml.MappingNode {
		return at(n, errors.New("want a map"))
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if err := f(n.Content[i].Value, n.Content[i+1]); err != nil {
			return at(n.Content[i], err)
		}
	}
	return nil
}

// stepFields decodes a step's settings, rejecting keys it does not know.
func stepFields(n *yaml.Node, known ...string) (map[string]*yaml.Node, error) {
	out := map[string]*yaml.Node{}
	err := mapping(n, func(k string, v *yaml.Node) error {
		for _, kn := range known {
			if k == kn {
				out[k] = v
				return nil
			}
		}
		if k == "salt" {
			return errors.New("a salt must not be written in the config: use salt_env or salt_file")
		}
		return fmt.Errorf("unknown setting %q (want %s)", k, strings.Join(known, ", "))
	})
	return out, err
}

func str(f map[string]*yaml.Node, k string, required bool) (string, error) {
	n := f[k]
	if n == nil {
		if required {
			return "", fmt.Errorf("%s: required", k)
		}
		return "", nil
	}
	var s string
	if err := n.Decode(&s); err != nil {
		return "", at(n, fmt.Errorf("%s: %w", k, err))
	}
	if required && s == "" {
		return "", at(n, fmt.Errorf("%s: required", k))
	}
	return s, nil
}

func strs(f map[string]*yaml.Node, k string, required bool) ([]string, error) {
	n := f[k]
	if n == nil {
		if required {
			return nil, fmt.Errorf("%s: required", k)
		}
		return nil, nil
	}
	var s []string
	if err := n.Decode(&s); err != nil {
		return nil, at(n, fmt.Errorf("%s: want a list of names: %w", k, err))
	}
	if required && len(s) == 0 {
		return nil, at(n, fmt.Errorf("%s: required", k))
	}
	return s, nil
}

func boolean(f map[string]*yaml.Node, k string) (bool, error) {
	n := f[k]
	if n == nil {
		return false, nil
	}
	var b bool
	if err := n.Decode(&b); err != nil {
		return false, at(n, fmt.Errorf("%s: %w", k, err))
	}
	return b, nil
}

func typ(f map[string]*yaml.Node, k string) (*Type, error) {
	s, err := str(f, k, false)
	if err != nil || s == "" {
		return nil, err
	}
	t, err := ParseType(s)
	if err != nil {
		return nil, at(f[k], fmt.Errorf("%s: %w", k, err))
	}
	return &t, nil
}

// typesFor reads an optional map of output column types, text by default.
func typesFor(f map[string]*yaml.Node, names []string) ([]Type, error) {
	out := make([]Type, len(names))
	for i := range out {
		out[i] = typeText
	}
	n := f["types"]
	if n == nil {
		return out, nil
	}
	var m map[string]string
	if err := n.Decode(&m); err != nil {
		return nil, at(n, fmt.Errorf("types: want a map of column: type: %w", err))
	}
	for col, ts := range m {
		i := indexOf(names, col)
		if i < 0 {
			return nil, at(n, fmt.Errorf("types: %q is not an output column", col))
		}
		t, err := ParseType(ts)
		if err != nil {
			return nil, at(n, fmt.Errorf("types: %s: %w", col, err))
		}
		out[i] = t
	}
	return out, nil
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
func secret(f map[string]*yaml.Node, getenv func(string) string) ([]byte, error) {
	env, err := str(f, "salt_env", false)
	if err != nil {
		return nil, err
	}
	file, err := str(f, "salt_file", false)
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

func buildStep(sc StepConfig, env celEnv, getenv func(string) string, o *options) (Step, error) {
	n := sc.node
	scalarOrMap := func(key string) (map[string]*yaml.Node, error) {
		if n.Kind == yaml.ScalarNode {
			return map[string]*yaml.Node{key: n}, nil
		}
		return stepFields(n, key)
	}
	switch sc.Kind {
	case "filter":
		f, err := scalarOrMap("expr")
		if err != nil {
			return nil, err
		}
		e, err := exprField(env, f, "expr")
		if err != nil {
			return nil, err
		}
		return filterStep{e: e}, nil
	case "compute":
		f, err := stepFields(n, "column", "expr", "type")
		if err != nil {
			return nil, err
		}
		col, err := str(f, "column", true)
		if err != nil {
			return nil, err
		}
		e, err := exprField(env, f, "expr")
		if err != nil {
			return nil, err
		}
		t, err := typ(f, "type")
		if err != nil {
			return nil, err
		}
		return computeStep{column: col, e: e, to: t}, nil
	case "rename":
		if n.Kind != yaml.MappingNode {
			return nil, at(n, errors.New("rename: want a map of old: new column names"))
		}
		var st renameStep
		err := mapping(n, func(k string, v *yaml.Node) error {
			var to string
			if err := v.Decode(&to); err != nil || to == "" {
				return errors.New("want a column name")
			}
			st.pairs = append(st.pairs, [2]string{k, to})
			return nil
		})
		return st, err
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
		f, err := stepFields(n, "schema", "name")
		if err != nil {
			return nil, err
		}
		schema, err := str(f, "schema", false)
		if err != nil {
			return nil, err
		}
		name, err := str(f, "name", false)
		if err != nil {
			return nil, err
		}
		if schema == "" && name == "" {
			return nil, errors.New("table: give schema, name or both")
		}
		return renameTableStep{schema: schema, table: name}, nil
	case "convert":
		f, err := stepFields(n, "column", "to", "into", "keep_source")
		if err != nil {
			return nil, err
		}
		col, into, keep, err := common(f)
		if err != nil {
			return nil, err
		}
		t, err := typ(f, "to")
		if err != nil {
			return nil, err
		}
		if t == nil {
			return nil, errors.New("to: required (the SQL type to convert to)")
		}
		return convertStep{column: col, into: into, to: *t, keepSource: keep}, nil
	case "scale":
		f, err := stepFields(n, "column", "by", "to", "into", "keep_source")
		if err != nil {
			return nil, err
		}
		col, into, keep, err := common(f)
		if err != nil {
			return nil, err
		}
		by, err := str(f, "by", true)
		if err != nil {
			return nil, err
		}
		r, ok := new(big.Rat).SetString(by)
		if !ok {
			return nil, at(f["by"], fmt.Errorf("by: %q is not a number", by))
		}
		t, err := typ(f, "to")
		if err != nil {
			return nil, err
		}
		return scaleStep{column: col, into: into, by: r, to: t, keepSource: keep}, nil
	case "timezone":
		f, err := stepFields(n, "column", "from", "to", "into", "keep_source")
		if err != nil {
			return nil, err
		}
		col, into, keep, err := common(f)
		if err != nil {
			return nil, err
		}
		st := timezoneStep{column: col, into: into, keepSource: keep}
		for _, k := range []string{"from", "to"} {
			z, err := str(f, k, false)
			if err != nil {
				return nil, err
			}
			if z == "" {
				continue
			}
			loc, err := time.LoadLocation(z)
			if err != nil {
				return nil, at(f[k], fmt.Errorf("%s: %w", k, err))
			}
			if k == "from" {
				st.from = loc
			} else {
				st.to = loc
			}
		}
		if st.from == nil && st.to == nil {
			return nil, errors.New("timezone: give from, to or both")
		}
		return st, nil
	case "json":
		f, err := stepFields(n, "column", "fields", "types", "keep_source")
		if err != nil {
			return nil, err
		}
		col, err := str(f, "column", true)
		if err != nil {
			return nil, err
		}
		keep, err := boolean(f, "keep_source")
		if err != nil {
			return nil, err
		}
		fn := f["fields"]
		if fn == nil {
			return nil, errors.New("fields: required (a map of column: path)")
		}
		var names, paths []string
		if err := mapping(fn, func(k string, v *yaml.Node) error {
			var p string
			if err := v.Decode(&p); err != nil || p == "" {
				return errors.New("want a JSON path such as customer.address[0].city")
			}
			names, paths = append(names, k), append(paths, p)
			return nil
		}); err != nil {
			return nil, err
		}
		typs, err := typesFor(f, names)
		if err != nil {
			return nil, err
		}
		st := jsonStep{column: col, keepSource: keep}
		for i := range names {
			st.fields = append(st.fields, jsonField{name: names[i], path: splitPath(paths[i]), to: typs[i]})
		}
		return st, nil
	case "split":
		f, err := stepFields(n, "column", "into", "separator", "regex", "json", "types", "trim", "keep_source")
		if err != nil {
			return nil, err
		}
		col, err := str(f, "column", true)
		if err != nil {
			return nil, err
		}
		into, err := strs(f, "into", true)
		if err != nil {
			return nil, err
		}
		keep, err := boolean(f, "keep_source")
		if err != nil {
			return nil, err
		}
		typs, err := typesFor(f, into)
		if err != nil {
			return nil, err
		}
		isJSON, err := boolean(f, "json")
		if err != nil {
			return nil, err
		}
		sep, err := str(f, "separator", false)
		if err != nil {
			return nil, err
		}
		re, err := str(f, "regex", false)
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
		if trim := f["trim"]; trim != nil {
			t, err := boolean(f, "trim")
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
				return nil, at(f["regex"], fmt.Errorf("regex: %w", err))
			}
			if st.re.NumSubexp() != len(into) {
				return nil, at(f["regex"], fmt.Errorf("regex has %d groups for %d columns", st.re.NumSubexp(), len(into)))
			}
		case sep == "":
			return nil, errors.New("split: give separator, regex or json: true")
		}
		return st, nil
	case "combine":
		f, err := stepFields(n, "columns", "into", "separator", "keep_source")
		if err != nil {
			return nil, err
		}
		cols, err := strs(f, "columns", true)
		if err != nil {
			return nil, err
		}
		into, err := str(f, "into", true)
		if err != nil {
			return nil, err
		}
		sep, err := str(f, "separator", false)
		if err != nil {
			return nil, err
		}
		keep, err := boolean(f, "keep_source")
		if err != nil {
			return nil, err
		}
		return combineStep{columns: cols, into: into, separator: sep, keepSource: keep}, nil
	case "hash":
		f, err := stepFields(n, "column", "into", "salt_env", "salt_file", "keep_source")
		if err != nil {
			return nil, err
		}
		col, into, keep, err := common(f)
		if err != nil {
			return nil, err
		}
		salt, err := secret(f, getenv)
		if err != nil {
			return nil, err
		}
		return hashStep{column: col, into: into, salt: salt, keepSource: keep}, nil
	case "mask":
		f, err := stepFields(n, "column", "keep_first", "keep_last", "char", "with")
		if err != nil {
			return nil, err
		}
		col, err := str(f, "column", true)
		if err != nil {
			return nil, err
		}
		st := maskStep{column: col, char: "*"}
		for k, dst := range map[string]*int{"keep_first": &st.keepFirst, "keep_last": &st.keepLast} {
			if v := f[k]; v != nil {
				if err := v.Decode(dst); err != nil || *dst < 0 {
					return nil, at(v, fmt.Errorf("%s: want a count", k))
				}
			}
		}
		if c, err := str(f, "char", false); err != nil {
			return nil, err
		} else if c != "" {
			st.char = c
		}
		if w := f["with"]; w != nil {
			st.withSet = true
			if w.Tag != "!!null" {
				var s string
				if err := w.Decode(&s); err != nil {
					return nil, at(w, fmt.Errorf("with: %w", err))
				}
				st.with = &s
			}
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
func common(f map[string]*yaml.Node) (col, into string, keep bool, err error) {
	if col, err = str(f, "column", true); err != nil {
		return
	}
	if into, err = str(f, "into", false); err != nil {
		return
	}
	if into != "" && !identRe.MatchString(into) {
		err = at(f["into"], fmt.Errorf("into: %q is not a column name", into))
		return
	}
	keep, err = boolean(f, "keep_source")
	return
}

// exprField parses the CEL expression at key k. Syntax errors name the line
// in the config and the position in the expression.
func exprField(env celEnv, f map[string]*yaml.Node, k string) (*expr, error) {
	n := f[k]
	if n == nil {
		return nil, fmt.Errorf("%s: required", k)
	}
	var src string
	if err := n.Decode(&src); err != nil || strings.TrimSpace(src) == "" {
		return nil, at(n, fmt.Errorf("%s: want an expression", k))
	}
	e, err := parseExpr(env, src, n.Line)
	if err != nil {
		return nil, at(n, err)
	}
	return e, nil
}
