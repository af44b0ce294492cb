package producer

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/tributary-cdc/tributary/schemas"
)

// catalog answers type and key questions the pgoutput stream leaves open,
// over an ordinary (non-replication) connection. Not safe for concurrent use
// except where noted.
type catalog struct {
	conn  *pgx.Conn
	mu    sync.Mutex
	types map[uint32]*schemas.PGType
	names map[uint32]string // schema-qualified names from pgoutput's Type messages
}

func newCatalog(conn *pgx.Conn) *catalog {
	return &catalog{conn: conn, types: map[uint32]*schemas.PGType{}, names: map[uint32]string{}}
}

// noteType records the name that a pgoutput Type message gives a type.
func (c *catalog) noteType(oid uint32, namespace, name string) {
	c.mu.Lock()
	c.names[oid] = namespace + "." + name
	c.mu.Unlock()
}

// pgType resolves a type OID to its description, following arrays and domains.
func (c *catalog) pgType(ctx context.Context, oid uint32) (*schemas.PGType, error) {
	c.mu.Lock()
	t, ok := c.types[oid]
	c.mu.Unlock()
	if ok {
		return t, nil
	}
	var (
		name                 string
		typtype, typcategory string
		elem, base           uint32
		baseTypmod           int32
		isArray              bool
	)
	// An array type is its element's typarray; int2vector and oidvector
	// are subscriptable base types of category A with their own text form.
	err := c.conn.QueryRow(ctx, `SELECT t.typname, t.typtype::text, t.typcategory::text, t.typelem, t.typbasetype, t.typtypmod,
		       COALESCE((SELECT e.typarray = t.oid FROM pg_catalog.pg_type e WHERE e.oid = t.typelem), false)
		FROM pg_catalog.pg_type t WHERE t.oid = $1`, oid).Scan(&name, &typtype, &typcategory, &elem, &base, &baseTypmod, &isArray)
	if errors.Is(err, pgx.ErrNoRows) {
		// Dropped since the change was made (a column retyped, then its
		// old type dropped, while the producer was behind): pgoutput sends
		// its values in their text form, carried as text like any type
		// without a mapping of its own. Waiting would not bring it back.
		c.mu.Lock()
		name, ok := c.names[oid]
		if !ok {
			name = fmt.Sprintf("type %d", oid)
		}
		t = &schemas.PGType{OID: oid, Name: name, Kind: schemas.KindOther, Dropped: true}
		c.types[oid] = t
		c.mu.Unlock()
		return t, nil
	}
	if err != nil {
		return nil, fmt.Errorf("type oid %d: %w", oid, err)
	}
	t = &schemas.PGType{OID: oid, Name: name}
	switch {
	case typtype == "d":
		t.Kind = schemas.KindDomain
		t.BaseTypmod = baseTypmod
		if t.Base, err = c.pgType(ctx, base); err != nil {
			return nil, err
		}
	case typtype == "e":
		t.Kind = schemas.KindEnum
	case typcategory == "A" && elem != 0 && isArray:
		t.Kind = schemas.KindArray
		if t.Elem, err = c.pgType(ctx, elem); err != nil {
			return nil, err
		}
	case typtype == "b":
		t.Kind = schemas.KindBase
	default:
		t.Kind = schemas.KindOther
	}
	c.mu.Lock()
	c.types[oid] = t
	c.mu.Unlock()
	return t, nil
}

// table builds the schemas.Table of a Relation message. The replication key is
// what pgoutput flags as the replica identity (the primary key, or the
// columns of the REPLICA IDENTITY USING INDEX index), except under REPLICA
// IDENTITY FULL, where pgoutput flags every column: the key is then the
// primary key when the table has one. Only an index's key columns count,
// never its INCLUDE columns (pg_index.indnkeyatts). A column without NOT
// NULL is Nullable, which makes its key field nullable (only REPLICA
// IDENTITY FULL without a primary key keys by such columns).
func (c *catalog) table(ctx context.Context, rel *pglogrepl.RelationMessage) (schemas.Table, error) {
	t := schemas.Table{Schema: rel.Namespace, Name: rel.RelationName}
	oids := make([]uint32, len(rel.Columns))
	mods := make([]int32, len(rel.Columns))
	names := make([]string, len(rel.Columns))
	for i, col := range rel.Columns {
		oids[i], mods[i], names[i] = col.DataType, col.TypeModifier, col.Name
	}
	rows, err := c.conn.Query(ctx, `
		SELECT format_type(u.oid, u.mod),
		       COALESCE((SELECT a.attnum = ANY((i.indkey::int2[])[0:i.indnkeyatts - 1])
		                 FROM pg_catalog.pg_index i
		                 JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attname = u.name
		                 WHERE i.indrelid = $4 AND i.indisprimary), NULL),
		       COALESCE((SELECT NOT a.attnotnull FROM pg_catalog.pg_attribute a
		                 WHERE a.attrelid = $4 AND a.attname = u.name), true)
		FROM unnest($1::oid[], $2::int4[], $3::text[]) WITH ORDINALITY AS u(oid, mod, name, n)
		ORDER BY u.n`, oids, mods, names, rel.RelationID)
	if err != nil {
		return t, fmt.Errorf("columns of %s.%s: %w", rel.Namespace, rel.RelationName, err)
	}
	sqlTypes := make([]string, 0, len(oids))
	inPK := make([]*bool, 0, len(oids))
	nullable := make([]bool, 0, len(oids))
	for rows.Next() {
		var st string
		var pk *bool
		var null bool
		if err := rows.Scan(&st, &pk, &null); err != nil {
			rows.Close()
			return t, err
		}
		sqlTypes, inPK, nullable = append(sqlTypes, st), append(inPK, pk), append(nullable, null)
	}
	if err := rows.Err(); err != nil {
		return t, fmt.Errorf("columns of %s.%s: %w", rel.Namespace, rel.RelationName, err)
	}
	hasPK := false
	for _, pk := range inPK {
		if pk != nil {
			hasPK = true
		}
	}
	// Under REPLICA IDENTITY FULL pgoutput flags every column; otherwise
	// its flags are the key.
	hasPK = hasPK && rel.ReplicaIdentity == 'f'
	for i, col := range rel.Columns {
		typ, err := c.pgType(ctx, col.DataType)
		if err != nil {
			return t, fmt.Errorf("%s.%s column %q: %w", rel.Namespace, rel.RelationName, col.Name, err)
		}
		if typ.Dropped {
			sqlTypes[i] = "text" // format_type says "???"; the values are the type's text form
		}
		key := col.Flags&1 == 1
		if hasPK {
			key = inPK[i] != nil && *inPK[i]
		}
		t.Columns = append(t.Columns, schemas.Column{Name: col.Name, Type: *typ, Typmod: col.TypeModifier, SQLType: sqlTypes[i], Key: key,
			Nullable: nullable[i]})
	}
	return t, nil
}
