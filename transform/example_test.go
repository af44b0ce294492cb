package transform_test

import (
	"fmt"
	"strings"

	"github.com/tributary-cdc/tributary/transform"
)

// initials is a custom step: it adds a column "initials" computed from the
// column "name". Bind runs once per source table version, so the column
// lookup (and its error) happen there, not per row.
type initials struct{}

func (initials) Bind(s *transform.Schema) (transform.RowFunc, error) {
	name, err := s.Column("name")
	if err != nil {
		return nil, err
	}
	text, _ := transform.ParseType("varchar(8)")
	out, err := s.Add("initials", text, -1)
	if err != nil {
		return nil, err
	}
	return func(r *transform.Row) error {
		v, _ := r.Get(name).(string)
		if v == "" {
			r.Set(out, nil)
			return nil
		}
		var b strings.Builder
		for _, w := range strings.Fields(v) {
			b.WriteString(w[:1])
		}
		r.Set(out, b.String())
		return nil
	}, nil
}

// A custom step is registered with WithStep and used from the configuration
// as `custom: <name>`; WithTable appends Go steps to a table's pipeline
// without any configuration.
func ExampleWithStep() {
	cfg, err := transform.ParseConfig([]byte(`
tables:
  public.people:
    steps:
      - custom: initials
      - drop: [name]
`), "transforms.yaml")
	if err != nil {
		panic(err)
	}
	p, err := transform.Compile(cfg, transform.WithStep("initials", initials{}))
	fmt.Println(p != nil, err)
	// Output: true <nil>
}
