package schemas

import (
	"errors"
	"testing"
)

// TestCheckFullCompatibleUnions: a union may gain branches after its old
// ones and a type may become a union containing it (the text branch and
// nullable key columns of contract v1); anything else that changes a
// field's type is refused.
func TestCheckFullCompatibleUnions(t *testing.T) {
	rec := func(fieldType string) string {
		return `{"type":"record","name":"R","namespace":"x","fields":[{"name":"a","type":` + fieldType + `,"default":null}]}`
	}
	date := `{"type":"int","logicalType":"date"}`
	text := `{"type":"string","tributary.text":true}`
	ok := [][2]string{
		{`["null",` + date + `]`, `["null",` + date + `,` + text + `]`},
		{`["null","long"]`, `["null","long",` + text + `]`},
		{date, `[` + date + `,` + text + `]`},
		{`"int"`, `["null","int"]`},
		{`"long"`, `["null","long",` + text + `]`},
		{`["null",{"type":"array","items":["null","int"]}]`, `["null",{"type":"array","items":["null","int"]},` + text + `]`},
	}
	bad := [][2]string{
		{`["null",` + date + `,` + text + `]`, `["null",` + date + `]`},
		{`["null",` + date + `]`, `[` + date + `,"null"]`},
		{`["null",` + date + `]`, `["null","string",` + date + `]`},
		{`[` + date + `,` + text + `]`, date},
		{`"int"`, `["null","long"]`},
		{`["null","int"]`, `"int"`},
	}
	for _, c := range ok {
		if err := CheckFullCompatible(rec(c[0]), rec(c[1])); err != nil {
			t.Errorf("%s -> %s: %v", c[0], c[1], err)
		}
	}
	for _, c := range bad {
		if err := CheckFullCompatible(rec(c[0]), rec(c[1])); !errors.Is(err, ErrIncompatibleSchema) {
			t.Errorf("%s -> %s: err = %v, want ErrIncompatibleSchema", c[0], c[1], err)
		}
	}
}

// TestContractUpgradeCompatible: the key and value schemas of a table as
// contract v1 wrote them before the text branch (every row field
// ["null", T], key fields T) are replaced by today's without a refusal.
func TestContractUpgradeCompatible(t *testing.T) {
	var cols []Column
	for _, tc := range tcCases {
		if len(cols) > 0 && cols[len(cols)-1].SQLType == tc.sql {
			continue
		}
		cols = append(cols, Column{Name: tc.sql, Type: tc.t, Typmod: tc.typmod, SQLType: tc.sql, Key: len(cols) < 12})
	}
	tbl := Table{Schema: "public", Name: "t", Columns: cols}
	now, err := BuildTableSchema("p", tbl, UnsupportedFail)
	if err != nil {
		t.Fatal(err)
	}
	oldKey, err := SchemaWithoutText(now.KeySchema)
	if err != nil {
		t.Fatal(err)
	}
	oldValue, err := SchemaWithoutText(now.ValueSchema)
	if err != nil {
		t.Fatal(err)
	}
	if oldValue == now.ValueSchema || oldKey == now.KeySchema {
		t.Fatal("the table has no text branch to remove")
	}
	if err := CheckFullCompatible(oldKey, now.KeySchema); err != nil {
		t.Errorf("key: %v", err)
	}
	if err := CheckFullCompatible(oldValue, now.ValueSchema); err != nil {
		t.Errorf("value: %v", err)
	}
	// A nullable key column (REPLICA IDENTITY FULL) is a compatible change too.
	tbl.Columns[1].Nullable = true
	full, err := BuildTableSchema("p", tbl, UnsupportedFail)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckFullCompatible(now.KeySchema, full.KeySchema); err != nil {
		t.Errorf("nullable key: %v", err)
	}
}
