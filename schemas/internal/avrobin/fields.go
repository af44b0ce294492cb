package avrobin

import (
	"fmt"
	"time"
)

// Setter decodes one field of a record from b into its place in out and
// returns the bytes after it. The setters below are compiled once per writer
// schema from its Field; they check the field's type at decode time, so that
// a reader keeps working on writer schemas that add or drop fields.
type Setter[T any] func(b []byte, out *T) ([]byte, error)

// SetRecord compiles a record field whose fields pick assigns; a field pick
// returns nil for is decoded and skipped.
func SetRecord[U any](f Field, pick func(Field) Setter[U]) (Setter[U], error) {
	if f.Node.Kind != KindRecord {
		return nil, fmt.Errorf("field %q is not a record", f.Name)
	}
	var sets []Setter[U]
	for _, sf := range f.Node.Fields {
		s := pick(sf)
		if s == nil {
			s = Skip[U](sf)
		}
		sets = append(sets, s)
	}
	return func(b []byte, out *U) ([]byte, error) {
		var err error
		for _, s := range sets {
			if b, err = s(b, out); err != nil {
				return nil, fmt.Errorf("field %q: %w", f.Name, err)
			}
		}
		return b, nil
	}, nil
}

// Skip decodes field f and drops the value.
func Skip[T any](f Field) Setter[T] {
	return func(b []byte, _ *T) ([]byte, error) {
		_, rest, err := f.Node.Native(b)
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", f.Name, err)
		}
		return rest, nil
	}
}

// SetString reads a string or nullable string field (null is ""), keeping
// the current string when the bytes are equal to it.
func SetString[T any](f Field, at func(*T) *string) Setter[T] {
	n := f.Node
	return func(b []byte, out *T) ([]byte, error) {
		if n.Kind == KindUnion {
			i, rest, err := ReadLong(b)
			if err != nil || i < 0 || i >= int64(len(n.Branches)) {
				return nil, fmt.Errorf("field %q: bad union index", f.Name)
			}
			b = rest
			switch n.Branches[i].Kind {
			case KindNull:
				*at(out) = ""
				return b, nil
			case KindString:
			default:
				return nil, fmt.Errorf("field %q: union member %s is not a string", f.Name, n.Branches[i].Name)
			}
		} else if n.Kind != KindString {
			return nil, fmt.Errorf("field %q: %s is not a string", f.Name, n.Name)
		}
		bs, rest, err := ReadBytes(b)
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", f.Name, err)
		}
		if p := at(out); *p != string(bs) {
			*p = string(bs)
		}
		return rest, nil
	}
}

// SetLong reads an int or long field into an integer of any width (no
// range check: the writer's type is the contract).
func SetLong[T any, I ~int64 | ~uint64 | ~uint32 | ~int32](f Field, at func(*T) *I) Setter[T] {
	n := f.Node
	return func(b []byte, out *T) ([]byte, error) {
		var v int64
		var err error
		switch n.Kind {
		case KindLong:
			v, b, err = ReadLong(b)
		case KindInt:
			var i int32
			i, b, err = ReadInt(b)
			v = int64(i)
		default:
			return nil, fmt.Errorf("field %q: %s is not a long", f.Name, n.Name)
		}
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", f.Name, err)
		}
		*at(out) = I(v)
		return b, nil
	}
}

// SetTime reads a timestamp-micros field, or any field whose native form is
// a time.Time.
func SetTime[T any](f Field, at func(*T) *time.Time) Setter[T] {
	n := f.Node
	return func(b []byte, out *T) ([]byte, error) {
		if n.Kind != KindTimestampMicros {
			v, rest, err := n.Native(b)
			if err != nil {
				return nil, fmt.Errorf("field %q: %w", f.Name, err)
			}
			t, ok := v.(time.Time)
			if !ok {
				return nil, fmt.Errorf("field %q: %T is not a timestamp", f.Name, v)
			}
			*at(out) = t
			return rest, nil
		}
		us, rest, err := ReadLong(b)
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", f.Name, err)
		}
		*at(out) = TimeFromMicros(us)
		return rest, nil
	}
}

// SetBool reads a boolean field.
func SetBool[T any](f Field, at func(*T) *bool) Setter[T] {
	n := f.Node
	return func(b []byte, out *T) ([]byte, error) {
		if n.Kind != KindBoolean {
			return nil, fmt.Errorf("field %q: %s is not a boolean", f.Name, n.Name)
		}
		v, rest, err := ReadBool(b)
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", f.Name, err)
		}
		*at(out) = v
		return rest, nil
	}
}

// SetStrings appends the items of an array-of-strings field.
func SetStrings[T any](f Field, at func(*T) *[]string) Setter[T] {
	n := f.Node
	return func(b []byte, out *T) ([]byte, error) {
		if n.Kind != KindArray || n.Elem.Kind != KindString {
			return nil, fmt.Errorf("field %q: %s is not an array of strings", f.Name, n.Name)
		}
		p := at(out)
		for {
			cnt, rest, err := ReadBlockCount(b)
			if err != nil {
				return nil, fmt.Errorf("field %q: %w", f.Name, err)
			}
			b = rest
			if cnt == 0 {
				return b, nil
			}
			for j := int64(0); j < cnt; j++ {
				s, rest, err := ReadString(b)
				if err != nil {
					return nil, fmt.Errorf("field %q item %d: %w", f.Name, len(*p)+1, err)
				}
				*p = append(*p, s)
				b = rest
			}
		}
	}
}
