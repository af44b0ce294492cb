package schemas

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"

	"github.com/linkedin/goavro/v2"
	"github.com/twmb/franz-go/pkg/sr"
)

// SchemaChangePolicy says what Register does when a new schema version is not
// fully compatible with the subject's latest version.
type SchemaChangePolicy int

const (
	// SchemaChangeFail refuses the new version with ErrIncompatibleSchema.
	SchemaChangeFail SchemaChangePolicy = iota
	// SchemaChangeNewVersion registers it anyway and logs a warning; readers
	// of the old version must be upgraded.
	SchemaChangeNewVersion
)

// ParseSchemaChangePolicy parses "fail" or "new-version".
func ParseSchemaChangePolicy(s string) (SchemaChangePolicy, error) {
	switch s {
	case "fail", "":
		return SchemaChangeFail, nil
	case "new-version":
		return SchemaChangeNewVersion, nil
	}
	return 0, fmt.Errorf("unknown schema change policy %q (want fail or new-version)", s)
}

// Registry is a Confluent-API schema registry client with caches for both
// directions: subject+schema to ID for writers, ID to codec for readers.
// It is safe for concurrent use.
type Registry struct {
	cl  *sr.Client
	log *slog.Logger

	mu     sync.Mutex
	ids    map[string]int        // subject + "\x00" + schema -> id
	codecs map[int]*goavro.Codec // id -> codec
	raw    map[int]string        // id -> schema text
}

// NewRegistry connects to the registry at urls. opts may add TLS, basic auth or
// an HTTP client.
func NewRegistry(urls []string, log *slog.Logger, opts ...sr.ClientOpt) (*Registry, error) {
	if len(urls) == 0 {
		return nil, errors.New("registry: no URL")
	}
	if log == nil {
		log = slog.Default()
	}
	opts = append([]sr.ClientOpt{sr.URLs(urls...)}, opts...)
	cl, err := sr.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("registry %v: %w", urls, err)
	}
	return &Registry{cl: cl, log: log, ids: map[string]int{}, codecs: map[int]*goavro.Codec{}, raw: map[int]string{}}, nil
}

// Client is the underlying franz-go registry client.
func (r *Registry) Client() *sr.Client { return r.cl }

// Register returns the ID of schema under subject, registering it when it is
// new. A schema that is not fully compatible with the subject's latest version
// follows policy. Registration is idempotent: the same schema always gets the
// same ID.
func (r *Registry) Register(ctx context.Context, subject, schema string, policy SchemaChangePolicy) (int, error) {
	k := subject + "\x00" + schema
	r.mu.Lock()
	id, ok := r.ids[k]
	r.mu.Unlock()
	if ok {
		return id, nil
	}
	latest, err := r.cl.SchemaByVersion(ctx, subject, -1)
	switch {
	case err == nil:
		if latest.Schema.Schema != schema {
			if cerr := CheckFullCompatible(latest.Schema.Schema, schema); cerr != nil {
				if policy == SchemaChangeFail {
					return 0, fmt.Errorf("subject %s (latest version %d, id %d): %w; "+
						"set --schema-change new-version to register it anyway", subject, latest.Version, latest.ID, cerr)
				}
				r.log.Warn("registering an incompatible schema version", "subject", subject,
					"latest_version", latest.Version, "reason", cerr.Error())
			}
		}
	case isNotFound(err):
	default:
		return 0, fmt.Errorf("registry: latest version of %s: %w", subject, err)
	}
	ss, err := r.cl.CreateSchema(ctx, subject, sr.Schema{Schema: schema, Type: sr.TypeAvro})
	if err != nil {
		return 0, fmt.Errorf("registry: register %s: %w", subject, err)
	}
	r.mu.Lock()
	r.ids[k] = ss.ID
	r.raw[ss.ID] = schema
	r.mu.Unlock()
	return ss.ID, nil
}

// Codec returns the codec of schema id, fetching it once.
func (r *Registry) Codec(ctx context.Context, id int) (*goavro.Codec, error) {
	c, _, err := r.CodecAndSchema(ctx, id)
	return c, err
}

// CodecAndSchema returns the codec and schema text of id, fetching them once.
func (r *Registry) CodecAndSchema(ctx context.Context, id int) (*goavro.Codec, string, error) {
	r.mu.Lock()
	c, ok := r.codecs[id]
	raw := r.raw[id]
	r.mu.Unlock()
	if ok {
		return c, raw, nil
	}
	if raw == "" {
		s, err := r.cl.SchemaByID(ctx, id)
		if err != nil {
			return nil, "", fmt.Errorf("registry: schema id %d: %w", id, err)
		}
		raw = s.Schema
	}
	c, err := goavro.NewCodec(raw)
	if err != nil {
		return nil, "", fmt.Errorf("registry: schema id %d: %w", id, err)
	}
	r.mu.Lock()
	r.codecs[id] = c
	r.raw[id] = raw
	r.mu.Unlock()
	return c, raw, nil
}

// IsUnknownSchema reports whether err says the registry does not know a schema
// ID or subject; retrying will not help.
func IsUnknownSchema(err error) bool { return isNotFound(err) }

func isNotFound(err error) bool {
	var re *sr.ResponseError
	if errors.As(err, &re) {
		if re.StatusCode == http.StatusNotFound {
			return true
		}
		if se := re.SchemaError(); se != nil {
			return se.Code == sr.ErrSubjectNotFound.Code || se.Code == sr.ErrVersionNotFound.Code || se.Code == sr.ErrSchemaNotFound.Code
		}
	}
	return false
}
