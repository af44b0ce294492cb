package producer

import (
	"fmt"
	"strings"
)

// TableSpec is one published table, optionally with a PostgreSQL 15 column
// list and row filter (seed 001, "Information Distribution": a site gets a
// vertical and horizontal subset).
type TableSpec struct {
	Schema  string
	Name    string
	Columns []string // empty means every column
	Where   string   // row filter expression, without WHERE; empty means every row
}

// String renders the spec as PostgreSQL's publication table syntax.
func (s TableSpec) String() string {
	var b strings.Builder
	b.WriteString(quoteIdent(s.Schema) + "." + quoteIdent(s.Name))
	if len(s.Columns) > 0 {
		q := make([]string, len(s.Columns))
		for i, c := range s.Columns {
			q[i] = quoteIdent(c)
		}
		b.WriteString(" (" + strings.Join(q, ", ") + ")")
	}
	if s.Where != "" {
		b.WriteString(" WHERE (" + s.Where + ")")
	}
	return b.String()
}

// ParseTableSpecs parses a comma-separated list of table specs:
//
//	schema.table[(col, col...)][ WHERE (expr)]
//
// A table without a schema is in "public". Commas inside parentheses or quotes
// do not separate specs, and identifiers may be double-quoted.
func ParseTableSpecs(list []string) ([]TableSpec, error) {
	var out []TableSpec
	for _, item := range list {
		for _, part := range splitTopLevel(item) {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			s, err := parseTableSpec(part)
			if err != nil {
				return nil, fmt.Errorf("table %q: %w", part, err)
			}
			out = append(out, s)
		}
	}
	return out, nil
}

func splitTopLevel(s string) []string {
	var parts []string
	depth, start := 0, 0
	var quote rune
	for i, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '"' || r == '\'':
			quote = r
		case r == '(':
			depth++
		case r == ')':
			depth--
		case r == ',' && depth == 0:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

func parseTableSpec(s string) (TableSpec, error) {
	var spec TableSpec
	names, rest, err := parseQualifiedName(s)
	if err != nil {
		return spec, err
	}
	switch len(names) {
	case 1:
		spec.Schema, spec.Name = "public", names[0]
	case 2:
		spec.Schema, spec.Name = names[0], names[1]
	default:
		return spec, fmt.Errorf("want schema.table")
	}
	rest = strings.TrimSpace(rest)
	if strings.HasPrefix(rest, "(") {
		end := strings.IndexByte(rest, ')')
		if end < 0 {
			return spec, fmt.Errorf("unclosed column list")
		}
		for _, c := range strings.Split(rest[1:end], ",") {
			c = strings.TrimSpace(c)
			n, tail, err := parseQualifiedName(c)
			if err != nil || len(n) != 1 || strings.TrimSpace(tail) != "" {
				return spec, fmt.Errorf("bad column %q in column list", c)
			}
			spec.Columns = append(spec.Columns, n[0])
		}
		rest = strings.TrimSpace(rest[end+1:])
	}
	if rest != "" {
		if len(rest) < 5 || !strings.EqualFold(rest[:5], "where") {
			return spec, fmt.Errorf("unexpected %q (want a column list or WHERE (expr))", rest)
		}
		w := strings.TrimSpace(rest[5:])
		if strings.HasPrefix(w, "(") && strings.HasSuffix(w, ")") {
			w = w[1 : len(w)-1]
		}
		if strings.TrimSpace(w) == "" {
			return spec, fmt.Errorf("empty WHERE")
		}
		spec.Where = w
	}
	return spec, nil
}

// parseQualifiedName reads dot-separated identifiers, each plain (folded to
// lower case, as PostgreSQL does) or double-quoted.
func parseQualifiedName(s string) ([]string, string, error) {
	var names []string
	i := 0
	for {
		for i < len(s) && s[i] == ' ' {
			i++
		}
		if i >= len(s) {
			return nil, "", fmt.Errorf("missing name")
		}
		if s[i] == '"' {
			var b strings.Builder
			i++
			for {
				if i >= len(s) {
					return nil, "", fmt.Errorf("unclosed quoted identifier")
				}
				if s[i] == '"' {
					if i+1 < len(s) && s[i+1] == '"' {
						b.WriteByte('"')
						i += 2
						continue
					}
					i++
					break
				}
				b.WriteByte(s[i])
				i++
			}
			names = append(names, b.String())
		} else {
			j := i
			for j < len(s) && (s[j] == '_' || s[j] == '$' || s[j] >= 'a' && s[j] <= 'z' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= '0' && s[j] <= '9' || s[j] >= 0x80) {
				j++
			}
			if j == i {
				return nil, "", fmt.Errorf("bad name at %q", s[i:])
			}
			names = append(names, strings.ToLower(s[i:j]))
			i = j
		}
		if i < len(s) && s[i] == '.' {
			i++
			continue
		}
		return names, s[i:], nil
	}
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func quoteLiteral(s string) string { return `'` + strings.ReplaceAll(s, `'`, `''`) + `'` }
