package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
)

// ErrIncompatibleSchema reports a new schema version that readers of the
// previous version could not read, or that could not read the previous one.
var ErrIncompatibleSchema = errors.New("incompatible schema change")

// CheckFullCompatible reports whether a new schema version may replace the
// old one, for the schemas Tributary generates. Embedded registries approve
// everything, so the producer calls this before it registers.
//
// Records must add or remove fields only with defaults, and common fields
// keep their type: data written with either schema can be read with the
// other (Confluent FULL compatibility). One change is accepted that is
// only BACKWARD compatible: a union may gain branches after its existing
// ones, and a non-union type may become a union that contains it. Every
// record written before the change decodes with the new schema (the old
// branch indexes keep their meaning), which is what a registry's default
// BACKWARD level checks. It is safe for readers because every reader of
// Tributary's topics, its own and the stock Confluent deserializers of any
// language, decodes a record with the writer's schema, found by the ID the
// record carries; only a reader pinned to an old reader schema fails, and
// only on a value that takes a new branch. Contract v1 adds branches this
// way for the text branch of TYPES.md and for nullable key columns.
func CheckFullCompatible(oldSchema, newSchema string) error {
	var o, n any
	if err := json.Unmarshal([]byte(oldSchema), &o); err != nil {
		return fmt.Errorf("old schema: %w", err)
	}
	if err := json.Unmarshal([]byte(newSchema), &n); err != nil {
		return fmt.Errorf("new schema: %w", err)
	}
	if err := compatible("", o, n); err != nil {
		return fmt.Errorf("%w: %v", ErrIncompatibleSchema, err)
	}
	return nil
}

func compatible(path string, o, n any) error {
	om, oIsMap := o.(map[string]any)
	nm, nIsMap := n.(map[string]any)
	if oIsMap && nIsMap && om["type"] == "record" && nm["type"] == "record" {
		return compatibleRecords(path, om, nm)
	}
	if ou, ok := o.([]any); ok {
		nu, ok := n.([]any)
		if !ok || len(ou) > len(nu) {
			return fmt.Errorf("%s: union changed from %s to %s", orRoot(path), brief(o), brief(n))
		}
		// Branches may be added after the old ones (see CheckFullCompatible).
		for i := range ou {
			if err := compatible(fmt.Sprintf("%s[%d]", path, i), ou[i], nu[i]); err != nil {
				return err
			}
		}
		return nil
	}
	if nu, ok := n.([]any); ok {
		// A type that becomes a union containing it.
		for i := range nu {
			if compatible(fmt.Sprintf("%s[%d]", path, i), o, nu[i]) == nil {
				return nil
			}
		}
		return fmt.Errorf("%s: type %s became a union without it: %s", orRoot(path), brief(o), brief(n))
	}
	if oIsMap && nIsMap && om["type"] == "array" && nm["type"] == "array" {
		return compatible(path+"[]", om["items"], nm["items"])
	}
	if !reflect.DeepEqual(typeIdentity(o), typeIdentity(n)) {
		return fmt.Errorf("%s: type changed from %s to %s", orRoot(path), brief(o), brief(n))
	}
	return nil
}

func compatibleRecords(path string, o, n map[string]any) error {
	fields := func(m map[string]any) map[string]map[string]any {
		out := map[string]map[string]any{}
		fs, _ := m["fields"].([]any)
		for _, f := range fs {
			fm := f.(map[string]any)
			out[fm["name"].(string)] = fm
		}
		return out
	}
	of, nf := fields(o), fields(n)
	for _, name := range sortedKeys(of) {
		f := of[name]
		g, ok := nf[name]
		if !ok {
			if _, hasDefault := f["default"]; !hasDefault {
				return fmt.Errorf("%s.%s: removed field has no default", orRoot(path), name)
			}
			continue
		}
		if err := compatible(path+"."+name, f["type"], g["type"]); err != nil {
			return err
		}
	}
	for _, name := range sortedKeys(nf) {
		if _, ok := of[name]; ok {
			continue
		}
		if _, hasDefault := nf[name]["default"]; !hasDefault {
			return fmt.Errorf("%s.%s: added field has no default", orRoot(path), name)
		}
	}
	return nil
}

// typeIdentity drops documentation and Tributary attributes that do not change
// how a value is encoded.
func typeIdentity(s any) any {
	m, ok := s.(map[string]any)
	if !ok {
		return s
	}
	out := map[string]any{}
	for k, v := range m {
		switch k {
		case "doc", AttrColumn, AttrSQLType, AttrKey, "default":
			continue
		}
		out[k] = v
	}
	return out
}

func brief(v any) string {
	b, _ := json.Marshal(typeIdentity(v))
	if len(b) > 120 {
		b = append(b[:117], "..."...)
	}
	return string(b)
}

func orRoot(p string) string {
	if p == "" {
		return "(root)"
	}
	return p
}

// SchemaWithoutText returns schema (Avro JSON) as the producer derived it
// before the text branch (TYPES.md, "Schema evolution"): every union
// without its text branch, and a union left with one member replaced by
// that member. Upgrade tests register it as the previous version.
func SchemaWithoutText(schema string) (string, error) {
	var v any
	if err := json.Unmarshal([]byte(schema), &v); err != nil {
		return "", err
	}
	var walk func(any) any
	walk = func(n any) any {
		switch x := n.(type) {
		case []any:
			var out []any
			for _, b := range x {
				if m, ok := b.(map[string]any); ok && m[AttrText] == true {
					continue
				}
				out = append(out, walk(b))
			}
			if len(out) == 1 {
				return out[0]
			}
			return out
		case map[string]any:
			for k, e := range x {
				switch k {
				case "type", "items":
					x[k] = walk(e)
				case "fields":
					fs, _ := e.([]any)
					for _, f := range fs {
						walk(f)
					}
				}
			}
		}
		return n
	}
	return mustJSON(walk(v)), nil
}
