package schemas

import (
	"embed"
	"encoding/json"
	"fmt"
	"path"
	"sort"
	"strings"
)

//go:embed avro/*.avsc
var avscFiles embed.FS

// Names of the Kafka record headers that every data record carries, so that
// per-key consumers and tools can check order without decoding the value.
// Values are unsigned decimal strings.
const (
	HeaderCommitLSN = "tributary.commit_lsn"
	HeaderPosition  = "tributary.position"
	HeaderXID       = "tributary.xid"
	// HeaderSnapshot is "pending" on a change of a table whose online
	// snapshot is active: the row it changes may not have reached a reader
	// that bootstraps from the snapshot yet.
	HeaderSnapshot = "tributary.snapshot"
	// HeaderTruncate is on truncate records: the options the source's
	// TRUNCATE had, "restart_identity" and "cascade", comma-separated,
	// or empty. The truncate records of one TRUNCATE statement share its
	// LSN (source.lsn) and are consecutive in their transaction.
	HeaderTruncate = "tributary.truncate"
)

// Op is the kind of change an envelope carries.
type Op string

// The envelope's op values.
const (
	OpInsert   Op = "c"
	OpUpdate   Op = "u"
	OpDelete   Op = "d"
	OpRead     Op = "r" // a row read by the initial snapshot
	OpTruncate Op = "t"
)

// fixedRecords are the named records of avro/, by full name, parsed once.
var fixedRecords = mustLoadFixed()

func mustLoadFixed() map[string]map[string]any {
	ents, err := avscFiles.ReadDir("avro")
	if err != nil {
		panic(err)
	}
	out := make(map[string]map[string]any, len(ents))
	for _, e := range ents {
		b, err := avscFiles.ReadFile(path.Join("avro", e.Name()))
		if err != nil {
			panic(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			panic(fmt.Sprintf("schemas: %s: %v", e.Name(), err))
		}
		name := m["name"].(string)
		if ns, ok := m["namespace"].(string); ok {
			name = ns + "." + name
		}
		out[name] = m
	}
	return out
}

// FixedSchema returns the self-contained Avro JSON of one fixed record:
// "tributary.Frame", "tributary.Message", "tributary.Source" or "tributary.Tx".
func FixedSchema(fullName string) string {
	def, ok := fixedRecords[fullName]
	if !ok {
		panic("schemas: no fixed record " + fullName)
	}
	return mustJSON(inlineNamed(deepCopy(def), map[string]any{}, map[string]bool{fullName: true}))
}

// FrameSchema is the value schema of the transactions topic.
func FrameSchema() string { return FixedSchema("tributary.Frame") }

// FrameSchemaHistory returns every frame schema Tributary has written,
// newest first: FrameSchema, then the schema from before snapshot chunks
// carried their snapshot's ID and frames could mark a snapshot request.
// Readers without a registry decode with the first that fits.
func FrameSchemaHistory() []string {
	var def map[string]any
	if err := json.Unmarshal([]byte(FrameSchema()), &def); err != nil {
		panic(err)
	}
	without := func(rec map[string]any, name string) {
		var out []any
		for _, f := range rec["fields"].([]any) {
			if f.(map[string]any)["name"] != name {
				out = append(out, f)
			}
		}
		rec["fields"] = out
	}
	without(def, "snapshot_request")
	for _, f := range def["fields"].([]any) {
		if fm := f.(map[string]any); fm["name"] == "snapshot" {
			without(fm["type"].([]any)[1].(map[string]any), "id")
		}
	}
	return []string{FrameSchema(), mustJSON(def)}
}

// MessageSchema is the value schema of the messages topic.
func MessageSchema() string { return FixedSchema("tributary.Message") }

// MessageKeySchema is the key schema of the messages topic: the message prefix.
const MessageKeySchema = `{"type":"record","name":"MessageKey","namespace":"tributary","fields":[{"name":"prefix","type":"string"}]}`

// inlineNamed walks an Avro schema and replaces the first reference to each
// named type found in extra or fixedRecords by its definition, so that the
// result is self-contained, as a registry requires without references.
func inlineNamed(s any, extra map[string]any, defined map[string]bool) any {
	switch v := s.(type) {
	case string:
		if defined[v] {
			return v
		}
		if def, ok := extra[v]; ok {
			defined[v] = true
			return inlineNamed(def, extra, defined)
		}
		if def, ok := fixedRecords[v]; ok {
			defined[v] = true
			return inlineNamed(deepCopy(def), extra, defined)
		}
		return v
	case []any:
		for i := range v {
			v[i] = inlineNamed(v[i], extra, defined)
		}
		return v
	case map[string]any:
		if n, ok := v["name"].(string); ok && (v["type"] == "record" || v["type"] == "enum" || v["type"] == "fixed") {
			full := n
			if ns, ok := v["namespace"].(string); ok && !strings.Contains(n, ".") {
				full = ns + "." + n
			}
			defined[full] = true
			defined[n] = true
		}
		if fs, ok := v["fields"].([]any); ok {
			for _, f := range fs {
				fm := f.(map[string]any)
				fm["type"] = inlineNamed(fm["type"], extra, defined)
			}
		}
		if it, ok := v["items"]; ok {
			v["items"] = inlineNamed(it, extra, defined)
		}
		if t, ok := v["type"]; ok {
			if _, isStr := t.(string); !isStr {
				v["type"] = inlineNamed(t, extra, defined)
			}
		}
		return v
	}
	return s
}

func deepCopy(v any) any {
	switch t := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(t))
		for k, x := range t {
			m[k] = deepCopy(x)
		}
		return m
	case []any:
		s := make([]any, len(t))
		for i, x := range t {
			s[i] = deepCopy(x)
		}
		return s
	}
	return v
}

// mustJSON marshals a schema built from JSON-safe values; keys come out sorted,
// so equal schemas give equal strings.
func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// TopicName is the data topic of a table: "<prefix>.<schema>.<table>", with
// characters Kafka does not allow in topic names replaced by '_'.
func TopicName(prefix, schema, table string) string {
	return prefix + "." + sanitizeTopicPart(schema) + "." + sanitizeTopicPart(table)
}

// TransactionsTopic is the single-partition topic of commit frames.
func TransactionsTopic(prefix string) string { return prefix + ".transactions" }

// MessagesTopic carries logical decoding messages.
func MessagesTopic(prefix string) string { return prefix + ".messages" }

// StateTopic is the producer's compacted state topic: its position and each
// table's capture and snapshot progress (see package txlog).
func StateTopic(prefix string) string { return prefix + ".state" }

// IsDataTopic reports whether topic is one of prefix's table topics
// (TopicName): "<prefix>.<schema>.<table>", whose parts have no dot, as
// opposed to the transactions, messages, state, conflicts and dead-letter
// topics of the prefix. A table in a schema named "dlq" is not told apart
// from a dead-letter topic.
func IsDataTopic(prefix, topic string) bool {
	rest, ok := strings.CutPrefix(topic, prefix+".")
	return ok && strings.Count(rest, ".") == 1 && !strings.HasPrefix(rest, "dlq.")
}

// DeadLetterTopic is where consumer name sends the transactions it could not apply
// under the dead-letter policy.
func DeadLetterTopic(prefix, consumer string) string { return prefix + ".dlq." + consumer }

// KeySubject and ValueSubject follow Confluent's TopicNameStrategy.
func KeySubject(topic string) string { return topic + "-key" }

// ValueSubject follows Confluent's TopicNameStrategy.
func ValueSubject(topic string) string { return topic + "-value" }

func sanitizeTopicPart(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// avroName turns any identifier into a valid Avro name ([A-Za-z_][A-Za-z0-9_]*).
func avroName(s string) string {
	var b strings.Builder
	for i, r := range s {
		ok := r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || (i > 0 && r >= '0' && r <= '9')
		if ok {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "_"
	}
	return b.String()
}

// uniqueAvroNames maps each name to a distinct valid Avro name: the sanitized
// form, with "_2", "_3"... appended on collision. The mapping depends only on
// the ordered input, so a table keeps its field names while its columns do.
func uniqueAvroNames(names []string) []string {
	out := make([]string, len(names))
	used := make(map[string]bool, len(names))
	// Names that are already valid keep their exact form first.
	for i, n := range names {
		if avroName(n) == n && !used[n] {
			out[i] = n
			used[n] = true
		}
	}
	for i, n := range names {
		if out[i] != "" {
			continue
		}
		base := avroName(n)
		cand := base
		for k := 2; used[cand]; k++ {
			cand = fmt.Sprintf("%s_%d", base, k)
		}
		out[i] = cand
		used[cand] = true
	}
	return out
}

// sortedKeys is a small helper for deterministic iteration.
func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
