package duckdb

import (
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tributary-cdc/tributary/consumer"
)

// colType is how one source column is stored in DuckDB: its DuckDB type, the
// SQL expression that converts its staged text, and how a value is staged.
type colType struct {
	duck string // DuckDB type
	// conv turns the staged VARCHAR expression x into duck.
	conv func(x string) string
	// list is set for arrays, staged as JSON rather than PostgreSQL text.
	list bool
}

var numericRE = regexp.MustCompile(`^numeric\((\d+),(-?\d+)\)$`)

// scalarType maps a PostgreSQL type name (format_type) to DuckDB. ok is false
// for types DuckDB has no faithful equivalent of; they are kept as their
// PostgreSQL text.
func scalarType(pg string) (duck string, ok bool) {
	switch pg {
	case "smallint":
		return "SMALLINT", true
	case "integer":
		return "INTEGER", true
	case "bigint":
		return "BIGINT", true
	case "real":
		return "REAL", true
	case "double precision":
		return "DOUBLE", true
	case "boolean":
		return "BOOLEAN", true
	case "text", "name", "\"char\"":
		return "VARCHAR", true
	case "uuid":
		return "UUID", true
	case "json", "jsonb":
		return "JSON", true
	case "bytea":
		return "BLOB", true
	case "date":
		return "DATE", true
	case "time without time zone":
		return "TIME", true
	case "timestamp without time zone":
		return "TIMESTAMP", true
	case "timestamp with time zone":
		return "TIMESTAMPTZ", true
	}
	if strings.HasPrefix(pg, "character varying") || strings.HasPrefix(pg, "character(") || pg == "character" {
		return "VARCHAR", true
	}
	if strings.HasPrefix(pg, "time(") && strings.HasSuffix(pg, "without time zone") {
		return "TIME", true
	}
	if strings.HasPrefix(pg, "timestamp(") {
		if strings.HasSuffix(pg, "with time zone") && !strings.HasSuffix(pg, "without time zone") {
			return "TIMESTAMPTZ", true
		}
		return "TIMESTAMP", true
	}
	if m := numericRE.FindStringSubmatch(pg); m != nil {
		p, _ := strconv.Atoi(m[1])
		s, _ := strconv.Atoi(m[2])
		if p <= 38 && s >= 0 && s <= p {
			return fmt.Sprintf("DECIMAL(%d,%d)", p, s), true
		}
	}
	return "", false
}

// typeOf maps a column. Unconstrained numeric, interval, enums, network and
// other types stay VARCHAR holding PostgreSQL's text form, so nothing is
// lost or rounded.
func typeOf(c consumer.Column) colType {
	pg := c.SQLType
	if strings.HasSuffix(pg, "[]") {
		if elem, ok := scalarType(strings.TrimSuffix(pg, "[]")); ok && elem != "BLOB" {
			return colType{duck: elem + "[]", list: true, conv: func(x string) string {
				return "CAST(CAST(" + x + " AS JSON) AS " + elem + "[])"
			}}
		}
		return colType{duck: "VARCHAR", conv: func(x string) string { return x }}
	}
	duck, ok := scalarType(pg)
	switch {
	case !ok || duck == "VARCHAR":
		return colType{duck: "VARCHAR", conv: func(x string) string { return x }}
	case duck == "BLOB":
		return colType{duck: duck, conv: func(x string) string { return "unhex(substr(" + x + ", 3))" }}
	}
	return colType{duck: duck, conv: func(x string) string { return "CAST(" + x + " AS " + duck + ")" }}
}

// listJSON renders a decoded Avro array as JSON that DuckDB casts to a LIST.
func listJSON(v any) (string, error) {
	b, err := json.Marshal(jsonValue(v))
	if err != nil {
		return "", err
	}
	return string(b), nil
}

func jsonValue(v any) any {
	switch x := v.(type) {
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonValue(e)
		}
		return out
	case map[string]any: // a union branch
		for _, e := range x {
			return jsonValue(e)
		}
		return nil
	case *big.Rat:
		return json.Number(x.FloatString(ratScale(x)))
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return strconv.FormatFloat(x, 'g', -1, 64)
		}
		return x
	case float32:
		f := float64(x)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return strconv.FormatFloat(f, 'g', -1, 32)
		}
		return x
	case time.Time:
		return x.UTC().Format("2006-01-02T15:04:05.999999Z07:00")
	}
	return v
}

// ratScale is the number of decimals that represent r exactly (at most 38).
func ratScale(r *big.Rat) int {
	d := new(big.Int).Set(r.Denom())
	ten := big.NewInt(10)
	for s := 0; s <= 38; s++ {
		if d.Cmp(big.NewInt(1)) == 0 {
			return s
		}
		q, m := new(big.Int).QuoRem(d, ten, new(big.Int))
		if m.Sign() != 0 {
			// Not a power of ten: divide by 2 or 5 factors via multiplying the numerator.
			return 38
		}
		d = q
	}
	return 38
}
