package flagconf

import (
	"errors"
	"fmt"
	"os"

	"gopkg.in/yaml.v3"
)

// loadConfig reads and validates the YAML file at path and returns the typed
// value of every key in it. An empty path means no config file.
func (s *Set) loadConfig(path string) (map[*setting]any, error) {
	vals := make(map[*setting]any)
	if path == "" {
		return vals, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %v", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("config %s: %v", path, err)
	}
	if len(doc.Content) == 0 {
		return vals, nil // empty file
	}
	root := resolve(doc.Content[0])
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return vals, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config %s: expected a mapping of setting names to values, got %s", path, kindName(root))
	}
	known := s.knownKeys(false)
	seen := make(map[string]bool)
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := resolve(root.Content[i]), resolve(root.Content[i+1])
		key := k.Value
		if seen[key] {
			return nil, fmt.Errorf("config %s: key %q appears twice (line %d)", path, key, k.Line)
		}
		seen[key] = true
		st := s.byName[key]
		switch {
		case key == ConfigFlag:
			return nil, fmt.Errorf("config %s: key %q cannot be set inside the config file", path, key)
		case st == nil:
			msg := fmt.Sprintf("config %s: unknown key %q", path, key)
			if sug := suggest(key, known); sug != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", sug)
			}
			return nil, errors.New(msg)
		case st.secret:
			// Do not echo the value: it is presumably the secret.
			return nil, fmt.Errorf("config %s: key %q is a secret and cannot be written in the config file; use %q (a file holding it) or set %s",
				path, key, key+"-file", EnvName(key))
		}
		x, err := parseNode(st.val, v)
		if err != nil {
			if v.Kind == yaml.ScalarNode {
				return nil, fmt.Errorf("config %s: invalid value %q for %q: %v", path, v.Value, key, err)
			}
			return nil, fmt.Errorf("config %s: invalid value for %q: %v", path, key, err)
		}
		if x != nil {
			vals[st] = x
		}
	}
	return vals, nil
}

// parseNode converts one YAML value. It returns nil, nil for a null value.
func parseNode(val value, n *yaml.Node) (any, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return nil, nil
		}
		return val.parse(n.Value)
	case yaml.SequenceNode:
		items := make([]string, 0, len(n.Content))
		for _, it := range n.Content {
			it = resolve(it)
			if it.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("list item at line %d is %s, not a single value", it.Line, kindName(it))
			}
			items = append(items, it.Value)
		}
		return val.parseList(items)
	default:
		return nil, fmt.Errorf("expected a single value, got %s", kindName(n))
	}
}

func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return "a single value"
	}
}

// suggest returns the value in known whose key is closest to name, or "" if
// none is close enough to be a plausible typo.
func suggest(name string, known map[string]string) string {
	best, bestD := "", len(name)/3+2 // distance must be below this
	if bestD > 4 {
		bestD = 4
	}
	for k, v := range known {
		d := levenshtein(name, k)
		if d < bestD || (d == bestD && best != "" && v < best) {
			best, bestD = v, d
		}
	}
	return best
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
