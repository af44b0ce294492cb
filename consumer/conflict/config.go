package conflict

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Method is a resolution routine for a column group.
type Method string

// The resolution routines (seed 001, "Update Conflicts").
const (
	// MethodLatest keeps the version with the later commit time (the source
	// commit time of a remote change; see Engine for how the local row's is
	// known); equal times go to the site ranked first in Priority, then to
	// the site whose name sorts first.
	MethodLatest Method = "latest"
	// MethodEarliest keeps the version with the earlier commit time; ties as
	// for MethodLatest.
	MethodEarliest Method = "earliest"
	// MethodSitePriority keeps the version last written by the site ranked
	// first in Priority; unranked sites come after ranked ones, by name.
	MethodSitePriority Method = "site-priority"
	// MethodAdditive, for numeric columns, writes local + (remote after −
	// remote before), so that concurrent increments at every site count.
	// For an insert whose key exists it writes local + remote after.
	MethodAdditive Method = "additive"
	// MethodMinimum and MethodMaximum keep the smaller or larger value of
	// each column (SQL LEAST and GREATEST).
	MethodMinimum Method = "minimum"
	MethodMaximum Method = "maximum"
	// MethodKeepLocal ignores the remote change to the group, and
	// MethodApplyRemote overwrites the local values. Neither converges on
	// its own when both sites use it: pair keep-local at one site with
	// apply-remote at the other.
	MethodKeepLocal   Method = "keep-local"
	MethodApplyRemote Method = "apply-remote"
	// MethodCustom evaluates a CEL expression over local, remote_before and
	// remote_after (maps of column name to value) that returns a map of the
	// group's resolved column values; columns it leaves out keep their
	// local values.
	MethodCustom Method = "custom"
	// MethodError stops the consumer with an error naming the table, key,
	// LSN and both versions, for a person to resolve (by a row in
	// tributary_conflict_actions, or by fixing the row).
	MethodError Method = "error"
	// MethodOwnership is not declared: it is recorded for ownership
	// violations, and for conflicts decided by ownership (a change from
	// the row's owner, or from the owner of every column of the group,
	// overrides the local values).
	MethodOwnership Method = "ownership"
)

var methods = []Method{MethodLatest, MethodEarliest, MethodSitePriority, MethodAdditive, MethodMinimum, MethodMaximum,
	MethodKeepLocal, MethodApplyRemote, MethodCustom, MethodError}

// usesTime reports whether m compares versions' times.
func (m Method) usesTime() bool { return m == MethodLatest || m == MethodEarliest }

// DeletePolicy resolves a delete of a row that was changed locally, and an
// update of a row that was deleted locally.
type DeletePolicy string

// The delete policies.
const (
	// DeleteWins deletes the row and skips an update of a missing row. The
	// default: it converges.
	DeleteWins DeletePolicy = "delete-wins"
	// UpdateWins keeps a locally changed row that the remote deleted, and
	// inserts the remote after-image of an update whose row is missing. It
	// converges when every change carries a whole after-image.
	UpdateWins DeletePolicy = "update-wins"
	// DeleteError stops for a person.
	DeleteError DeletePolicy = "error"
)

// File is the YAML conflict configuration (--conflicts). Example:
//
//	priority: [hq, east, west]
//	tables:
//	  public.customers:
//	    method: latest            # columns in no group
//	    delete: delete-wins
//	    groups:
//	      address: {columns: [street, city], method: latest}
//	      credit:  {columns: [credit_limit], method: site-priority}
//	      balance: {columns: [balance], method: additive}
//	    ownership:
//	      owner: 'row.region == "east" ? "east" : "west"'
type File struct {
	// Site is the local site's name; --site overrides it.
	Site string `yaml:"site"`
	// Priority ranks sites, highest first: site-priority, and ties of
	// latest and earliest.
	Priority []string `yaml:"priority"`
	// Origins maps replication origin names to sites, for origin names that
	// do not follow the default "tributary_<site>".
	Origins map[string]string `yaml:"origins"`
	// Schema holds tributary_conflicts and tributary_row_meta ("public").
	Schema string `yaml:"schema"`
	// Defaults applies to tables not listed in Tables; when absent, those
	// tables are applied without conflict handling.
	Defaults *TableConfig `yaml:"defaults"`
	// Tables is keyed by "schema.table", or "table" for public.
	Tables map[string]*TableConfig `yaml:"tables"`
}

// TableConfig is one table's conflict handling.
type TableConfig struct {
	// Method resolves the columns that are in no group (latest by default).
	Method Method `yaml:"method"`
	// Expr is the CEL expression of Method custom.
	Expr string `yaml:"expr"`
	// TimestampColumn, with latest or earliest, names a timestamp column of
	// the columns in no group whose value is the version's time, in place
	// of commit times (see GroupConfig.TimestampColumn).
	TimestampColumn string `yaml:"timestamp_column"`
	// Delete is the DeletePolicy (delete-wins by default).
	Delete DeletePolicy `yaml:"delete"`
	// Groups are named column groups, each resolved on its own.
	Groups map[string]*GroupConfig `yaml:"groups"`
	// Ownership, when set, rejects changes from sites that do not own the row.
	Ownership *Ownership `yaml:"ownership"`
}

// GroupConfig is a column group: columns that change together and are
// resolved together.
type GroupConfig struct {
	Columns []string `yaml:"columns"`
	Method  Method   `yaml:"method"`
	Expr    string   `yaml:"expr"` // custom
	// TimestampColumn, with latest or earliest, is one of Columns, of type
	// timestamp or timestamptz, that every writer at every site sets on
	// each change of the group (an application column or a BEFORE trigger
	// that is not ALWAYS enabled). Its value, not the commit time, is then
	// the version's time: the remote after-image's against the local row's.
	// Such a group needs no track_commit_timestamp and no row metadata;
	// NULL counts as oldest.
	TimestampColumn string `yaml:"timestamp_column"`
}

// Ownership says which site may change a row; a change from any other site
// is an ownership violation. Owner and Primary name whole-row owners; a
// change must come from that site. Columns names per site the columns only
// it may change (vertical partitioning); columns listed for no site may be
// changed by any site that owns the row.
type Ownership struct {
	// Primary is the one site that may write the table.
	Primary string `yaml:"primary"`
	// Owner is a CEL expression over row (the before-image of an update or
	// delete, the after-image of an insert; a map of column name to value)
	// returning the owning site's name, or a list of names. It makes
	// horizontal partitions (a region column) and workflow ownership (a
	// status column) alike.
	Owner string `yaml:"owner"`
	// Columns maps a site to the columns only it may change.
	Columns map[string][]string `yaml:"columns"`
}

// LoadFile reads and validates a conflict configuration file.
func LoadFile(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("conflict config: %w", err)
	}
	return ParseFile(b, path)
}

// ParseFile parses and validates a conflict configuration; name is used in
// errors.
func ParseFile(data []byte, name string) (*File, error) {
	var f File
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, errEOF) {
		return nil, fmt.Errorf("conflict config %s: %w", name, err)
	}
	if err := f.validate(); err != nil {
		return nil, fmt.Errorf("conflict config %s: %w", name, err)
	}
	return &f, nil
}

func (f *File) validate() error {
	var errs []error
	if f.Schema == "" {
		f.Schema = "public"
	}
	seen := map[string]bool{}
	for _, s := range f.Priority {
		if s == "" || seen[s] {
			errs = append(errs, fmt.Errorf("priority: %q is empty or repeated", s))
		}
		seen[s] = true
	}
	if f.Defaults != nil {
		if err := f.Defaults.validate(); err != nil {
			errs = append(errs, fmt.Errorf("defaults: %w", err))
		}
	}
	names := make([]string, 0, len(f.Tables))
	for n := range f.Tables {
		names = append(names, n)
	}
	sort.Strings(names)
	norm := map[string]*TableConfig{}
	for _, n := range names {
		tc := f.Tables[n]
		if tc == nil {
			tc = &TableConfig{}
		}
		key := normTable(n)
		if key == "" {
			errs = append(errs, fmt.Errorf("tables: %q is not schema.table", n))
			continue
		}
		if _, dup := norm[key]; dup {
			errs = append(errs, fmt.Errorf("tables: %q is listed twice", key))
		}
		if err := tc.validate(); err != nil {
			errs = append(errs, fmt.Errorf("tables.%s: %w", n, err))
		}
		norm[key] = tc
	}
	f.Tables = norm
	return errors.Join(errs...)
}

func normTable(n string) string {
	n = strings.TrimSpace(n)
	if n == "" || strings.Count(n, ".") > 1 {
		return ""
	}
	if !strings.Contains(n, ".") {
		n = "public." + n
	}
	return n
}

func checkMethod(m Method, expr, tsCol string) error {
	if !slices.Contains(methods, m) {
		return fmt.Errorf("method %q: want one of %v", m, methods)
	}
	if (m == MethodCustom) != (expr != "") {
		return fmt.Errorf("method %q: expr is required with custom and only with custom", m)
	}
	if tsCol != "" && !m.usesTime() {
		return fmt.Errorf("method %q: timestamp_column %q is only for latest and earliest", m, tsCol)
	}
	return nil
}

func (tc *TableConfig) validate() error {
	var errs []error
	if tc.Method == "" {
		tc.Method = MethodLatest
	}
	if err := checkMethod(tc.Method, tc.Expr, tc.TimestampColumn); err != nil {
		errs = append(errs, err)
	}
	switch tc.Delete {
	case "":
		tc.Delete = DeleteWins
	case DeleteWins, UpdateWins, DeleteError:
	default:
		errs = append(errs, fmt.Errorf("delete %q: want delete-wins, update-wins or error", tc.Delete))
	}
	inGroup := map[string]string{}
	for g, gc := range tc.Groups {
		if gc == nil || len(gc.Columns) == 0 {
			errs = append(errs, fmt.Errorf("groups.%s: no columns", g))
			continue
		}
		if g == defaultGroup {
			errs = append(errs, fmt.Errorf("groups.%s: the name is reserved for the columns in no group", g))
		}
		if gc.Method == "" {
			gc.Method = tc.Method
			if gc.Method == MethodCustom && gc.Expr == "" {
				gc.Expr = tc.Expr
			}
		}
		if err := checkMethod(gc.Method, gc.Expr, gc.TimestampColumn); err != nil {
			errs = append(errs, fmt.Errorf("groups.%s: %w", g, err))
		}
		if gc.TimestampColumn != "" && !slices.Contains(gc.Columns, gc.TimestampColumn) {
			errs = append(errs, fmt.Errorf("groups.%s: timestamp_column %q is not one of its columns", g, gc.TimestampColumn))
		}
		for _, c := range gc.Columns {
			if o, ok := inGroup[c]; ok {
				errs = append(errs, fmt.Errorf("groups.%s: column %q is already in group %s", g, c, o))
			}
			inGroup[c] = g
		}
	}
	if o := tc.Ownership; o != nil {
		n := 0
		for _, set := range []bool{o.Primary != "", o.Owner != "", len(o.Columns) > 0} {
			if set {
				n++
			}
		}
		if n == 0 {
			errs = append(errs, errors.New("ownership: set primary, owner or columns"))
		}
		if o.Primary != "" && o.Owner != "" {
			errs = append(errs, errors.New("ownership: primary and owner exclude each other"))
		}
		owned := map[string]string{}
		for site, cols := range o.Columns {
			for _, c := range cols {
				if s, ok := owned[c]; ok {
					errs = append(errs, fmt.Errorf("ownership.columns: %q is owned by both %s and %s", c, s, site))
				}
				owned[c] = site
			}
		}
	}
	return errors.Join(errs...)
}
