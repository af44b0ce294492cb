// Package pgtext parses and prints the PostgreSQL text formats that pgoutput
// and COPY TO send under the producer's session settings (schemas.SessionParams:
// DateStyle=ISO, MDY; IntervalStyle=iso_8601; TimeZone=UTC;
// extra_float_digits=3; bytea_output=hex): integers, numerics, dates, times,
// timestamps, intervals, bytea, uuids and one-dimensional arrays.
//
// Promises:
//   - Every parser reads outside bytes: it never panics, never retains its
//     input, and rejects anything PostgreSQL would not print, so that a value
//     that parses also prints back to an equivalent literal.
//   - Printers write byte for byte what PostgreSQL's output functions write
//     under those settings.
//   - Malformed text fails with an error wrapping ErrSyntax (or a false ok);
//     well-formed values that the Go form cannot hold fail with
//     ErrTimestampRange or ErrArrayShape, so that callers can tell the two
//     apart.
//
// It knows nothing of Avro or of the event contract: package schemas maps
// the parsed values to Avro and decides what is representable.
package pgtext

import (
	"errors"
	"math"
	"strconv"
	"strings"
)

// Microsecond arithmetic constants.
const (
	UsecPerSec  = int64(1_000_000)
	UsecPerMin  = 60 * UsecPerSec
	UsecPerHour = 60 * UsecPerMin
	UsecPerDay  = 24 * UsecPerHour
)

// Range limits of PostgreSQL's date and timestamp types, relative to
// 1970-01-01 (PostgreSQL counts from 2000-01-01 internally).
const (
	// minDateDays is 4714-11-24 BC, Julian day 0.
	minDateDays = int64(-2440588)
	// endDateDays is 5874898-01-01, the first day past the date range.
	endDateDays = int64(2147483494 - 2440588)
	// minTimestampUsec is 4714-11-24 00:00:00 BC.
	minTimestampUsec = minDateDays * UsecPerDay
)

// ErrSyntax is the cause of every parse failure of malformed text. Package
// schemas wraps it with the type and the offending value.
var ErrSyntax = errors.New("invalid text")

// isSpace reports whether c is whitespace as PostgreSQL's scanner_isspace
// defines it (array_in and array_out use it).
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// ParseInt parses an optionally '-'-signed decimal integer that must fit in
// [lo, hi]. It does not allocate.
func ParseInt(b []byte, lo, hi int64) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	neg := false
	i := 0
	if b[0] == '-' {
		neg = true
		i = 1
	} else if b[0] == '+' {
		i = 1
	}
	if i == len(b) {
		return 0, false
	}
	// Accumulate negatively so that MinInt64 fits.
	var n int64
	for ; i < len(b); i++ {
		c := b[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n < (math.MinInt64+d)/10 {
			return 0, false
		}
		n = n*10 - d
	}
	if !neg {
		if n == math.MinInt64 {
			return 0, false
		}
		n = -n
	}
	if n < lo || n > hi {
		return 0, false
	}
	return n, true
}

// digits parses a run of 1..maxLen ASCII digits at b[i:] and returns the
// value and the index after it.
func digits(b []byte, i, minLen, maxLen int) (int64, int, bool) {
	start := i
	var n int64
	for i < len(b) && b[i] >= '0' && b[i] <= '9' && i-start < maxLen {
		n = n*10 + int64(b[i]-'0')
		i++
	}
	if i-start < minLen {
		return 0, i, false
	}
	return n, i, true
}

// fraction parses ".d{1,6}" at b[i:] if present and returns microseconds.
func fraction(b []byte, i int) (int64, int, bool) {
	if i >= len(b) || b[i] != '.' {
		return 0, i, true
	}
	i++
	start := i
	var n int64
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		if i-start == 6 {
			return 0, i, false
		}
		n = n*10 + int64(b[i]-'0')
		i++
	}
	if i == start {
		return 0, i, false
	}
	for k := i - start; k < 6; k++ {
		n *= 10
	}
	return n, i, true
}

// FloorDiv divides rounding toward negative infinity.
func FloorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// DaysFromCivil returns days since 1970-01-01 of the proleptic Gregorian
// date y-m-d, with astronomical year numbering (1 BC is year 0).
func DaysFromCivil(y int64, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := FloorDiv(y, 400)
	yoe := y - era*400
	mp := int64((m + 9) % 12)
	doy := (153*mp+2)/5 + int64(d) - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}

// CivilFromDays is the inverse of DaysFromCivil.
func CivilFromDays(z int64) (y int64, m, d int) {
	z += 719468
	era := FloorDiv(z, 146097)
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	y = yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d = int(doy - (153*mp+2)/5 + 1)
	if mp < 10 {
		m = int(mp + 3)
	} else {
		m = int(mp - 9)
	}
	if m <= 2 {
		y++
	}
	return y, m, d
}

func daysInMonth(y int64, m int) int {
	switch m {
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// parseDatePart parses "YYYY-MM-DD" (four or more year digits) at the
// start of b and returns the astronomical-less display year (>= 1), month,
// day and the index after it.
func parseDatePart(b []byte) (y int64, m, d int, i int, ok bool) {
	y, i, ok = digits(b, 0, 4, 7)
	if !ok || y < 1 || i >= len(b) || b[i] != '-' {
		return 0, 0, 0, i, false
	}
	mm, i, ok := digits(b, i+1, 2, 2)
	if !ok || mm < 1 || mm > 12 || i >= len(b) || b[i] != '-' {
		return 0, 0, 0, i, false
	}
	dd, i, ok := digits(b, i+1, 2, 2)
	if !ok || dd < 1 {
		return 0, 0, 0, i, false
	}
	return y, int(mm), int(dd), i, true
}

// hasBC consumes an optional " BC" suffix at b[i:], which must end b.
func hasBC(b []byte, i int) (bc bool, ok bool) {
	switch len(b) - i {
	case 0:
		return false, true
	case 3:
		return b[i] == ' ' && b[i+1] == 'B' && b[i+2] == 'C', b[i] == ' ' && b[i+1] == 'B' && b[i+2] == 'C'
	}
	return false, false
}

// civilDays validates a display date and converts it to days since 1970.
func civilDays(y int64, m, d int, bc bool) (int64, bool) {
	if bc {
		y = 1 - y
	}
	if d > daysInMonth(y, m) {
		return 0, false
	}
	return DaysFromCivil(y, m, d), true
}

// ParseDate parses date_out's ISO output: "YYYY-MM-DD", "YYYY-MM-DD BC",
// "infinity" or "-infinity". Infinities are math.MaxInt32 and math.MinInt32.
func ParseDate(b []byte) (int32, bool) {
	switch string(b) {
	case "infinity":
		return math.MaxInt32, true
	case "-infinity":
		return math.MinInt32, true
	}
	y, m, d, i, ok := parseDatePart(b)
	if !ok {
		return 0, false
	}
	bc, ok := hasBC(b, i)
	if !ok {
		return 0, false
	}
	days, ok := civilDays(y, m, d, bc)
	if !ok || days < minDateDays || days >= endDateDays {
		return 0, false
	}
	return int32(days), true
}

// appendYMD appends "YYYY-MM-DD" for days since 1970 and reports whether
// the year is BC (the caller appends " BC" where PostgreSQL puts it).
func appendYMD(dst []byte, days int64) ([]byte, bool) {
	y, m, d := CivilFromDays(days)
	bc := y <= 0
	if bc {
		y = 1 - y
	}
	for p := int64(1000); p > 1 && y < p; p /= 10 {
		dst = append(dst, '0')
	}
	dst = strconv.AppendInt(dst, y, 10)
	dst = append(dst, '-', byte('0'+m/10), byte('0'+m%10), '-', byte('0'+d/10), byte('0'+d%10))
	return dst, bc
}

// AppendDate appends date_out's ISO form of days since 1970.
func AppendDate(dst []byte, days int64) ([]byte, bool) {
	switch days {
	case math.MaxInt32:
		return append(dst, "infinity"...), true
	case math.MinInt32:
		return append(dst, "-infinity"...), true
	}
	if days < minDateDays || days >= endDateDays {
		return dst, false
	}
	dst, bc := appendYMD(dst, days)
	if bc {
		dst = append(dst, " BC"...)
	}
	return dst, true
}

// parseClock parses "HH:MM:SS[.ffffff]" at b[i:] and returns microseconds
// since midnight; maxHour is 23, or 24 for the time type (24:00:00 only).
func parseClock(b []byte, i int, maxHour int64) (int64, int, bool) {
	h, i, ok := digits(b, i, 2, 2)
	if !ok || h > maxHour || i >= len(b) || b[i] != ':' {
		return 0, i, false
	}
	mi, i, ok := digits(b, i+1, 2, 2)
	if !ok || mi > 59 || i >= len(b) || b[i] != ':' {
		return 0, i, false
	}
	s, i, ok := digits(b, i+1, 2, 2)
	if !ok || s > 59 {
		return 0, i, false
	}
	f, i, ok := fraction(b, i)
	if !ok {
		return 0, i, false
	}
	us := h*UsecPerHour + mi*UsecPerMin + s*UsecPerSec + f
	if us > UsecPerDay {
		return 0, i, false
	}
	return us, i, true
}

// ParseTime parses time_out's output "HH:MM:SS[.ffffff]", 00:00:00 to
// 24:00:00, into microseconds since midnight.
func ParseTime(b []byte) (int64, bool) {
	us, i, ok := parseClock(b, 0, 24)
	if !ok || i != len(b) {
		return 0, false
	}
	return us, true
}

// appendClock appends "HH:MM:SS[.f]" for microseconds since midnight, with
// trailing zeros of the fraction trimmed as PostgreSQL does.
func appendClock(dst []byte, us int64) []byte {
	h := us / UsecPerHour
	us -= h * UsecPerHour
	mi := us / UsecPerMin
	us -= mi * UsecPerMin
	s := us / UsecPerSec
	f := us - s*UsecPerSec
	dst = append(dst, byte('0'+h/10), byte('0'+h%10), ':', byte('0'+mi/10), byte('0'+mi%10), ':', byte('0'+s/10), byte('0'+s%10))
	return appendFraction(dst, f)
}

// appendFraction appends ".ffffff" with trailing zeros trimmed, or nothing
// for zero. f is in [0, 1e6).
func appendFraction(dst []byte, f int64) []byte {
	if f == 0 {
		return dst
	}
	var buf [7]byte
	buf[0] = '.'
	for k := 6; k >= 1; k-- {
		buf[k] = byte('0' + f%10)
		f /= 10
	}
	n := 7
	for buf[n-1] == '0' {
		n--
	}
	return append(dst, buf[:n]...)
}

// AppendTime appends time_out's output for microseconds since midnight.
func AppendTime(dst []byte, us int64) ([]byte, bool) {
	if us < 0 || us > UsecPerDay {
		return dst, false
	}
	return appendClock(dst, us), true
}

// ErrTimestampRange is the cause for a valid PostgreSQL timestamp after
// 294247-01-10 04:00:54.775806 UTC, which int64 microseconds since 1970
// cannot hold (PostgreSQL counts from 2000 and reaches 294276). Package
// schemas reports it as unrepresentable, not as malformed.
var ErrTimestampRange = errors.New("timestamp beyond int64 microseconds since 1970")

// ParseTimestamp parses timestamp_out's (withTZ false) or
// timestamptz_out's (withTZ true) ISO output into microseconds since
// 1970-01-01 00:00:00 UTC (for timestamp, of the wall clock). Forms:
// "YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM[:SS]]][ BC]", "infinity",
// "-infinity". The infinities are math.MaxInt64 and math.MinInt64; a finite
// value beyond int64 microseconds since 1970 (after 294247-01-10) or equal to
// one of those two sentinels is rejected.
func ParseTimestamp(b []byte, withTZ bool) (int64, error) {
	switch string(b) {
	case "infinity":
		return math.MaxInt64, nil
	case "-infinity":
		return math.MinInt64, nil
	}
	y, m, d, i, ok := parseDatePart(b)
	if !ok || i >= len(b) || b[i] != ' ' {
		return 0, ErrSyntax
	}
	tod, i, ok := parseClock(b, i+1, 23)
	if !ok {
		return 0, ErrSyntax
	}
	var off int64
	if withTZ {
		if i >= len(b) || (b[i] != '+' && b[i] != '-') {
			return 0, ErrSyntax
		}
		sign := int64(1)
		if b[i] == '-' {
			sign = -1
		}
		oh, j, ok := digits(b, i+1, 2, 2)
		if !ok || oh > 15 {
			return 0, ErrSyntax
		}
		off = oh * 3600
		i = j
		if i < len(b) && b[i] == ':' {
			om, j, ok := digits(b, i+1, 2, 2)
			if !ok || om > 59 {
				return 0, ErrSyntax
			}
			off += om * 60
			i = j
			if i < len(b) && b[i] == ':' {
				os, j, ok := digits(b, i+1, 2, 2)
				if !ok || os > 59 {
					return 0, ErrSyntax
				}
				off += os
				i = j
			}
		}
		off *= sign * UsecPerSec
	}
	bc, ok := hasBC(b, i)
	if !ok {
		return 0, ErrSyntax
	}
	days, ok := civilDays(y, m, d, bc)
	if !ok || days < minDateDays {
		return 0, ErrSyntax
	}
	// days*UsecPerDay + tod - off without overflow.
	if days > math.MaxInt64/UsecPerDay {
		return 0, ErrTimestampRange
	}
	us := days * UsecPerDay
	delta := tod - off
	if delta > 0 && us > math.MaxInt64-delta {
		return 0, ErrTimestampRange
	}
	us += delta
	if us == math.MaxInt64 {
		return 0, ErrTimestampRange
	}
	if us < minTimestampUsec {
		return 0, ErrSyntax
	}
	return us, nil
}

// AppendTimestamp appends the ISO output of microseconds since 1970 in UTC;
// withTZ appends the "+00" offset that timestamptz_out prints under
// TimeZone=UTC.
func AppendTimestamp(dst []byte, us int64, withTZ bool) ([]byte, bool) {
	switch us {
	case math.MaxInt64:
		return append(dst, "infinity"...), true
	case math.MinInt64:
		return append(dst, "-infinity"...), true
	}
	if us < minTimestampUsec {
		return dst, false
	}
	days := FloorDiv(us, UsecPerDay)
	dst, bc := appendYMD(dst, days)
	dst = append(dst, ' ')
	dst = appendClock(dst, us-days*UsecPerDay)
	if withTZ {
		dst = append(dst, "+00"...)
	}
	if bc {
		dst = append(dst, " BC"...)
	}
	return dst, true
}

// Interval is PostgreSQL's interval: months, days and microseconds, each
// signed and independent.
type Interval struct {
	Months int32
	Days   int32
	Micros int64
}

// Infinite intervals exist from PostgreSQL 17 on; they are stored with every
// field at its extreme.
var (
	IntervalInf    = Interval{math.MaxInt32, math.MaxInt32, math.MaxInt64}
	IntervalNegInf = Interval{math.MinInt32, math.MinInt32, math.MinInt64}
)

// ParseInterval parses interval_out's IntervalStyle=iso_8601 output, e.g.
// "P1Y2M3DT4H5M6.5S", "P-1Y-2M3DT-4H-5M-6S", "PT-0.5S", "PT0S", and
// PostgreSQL 17's "infinity" and "-infinity". Units appear in that order, at
// most once each; only seconds have a fraction (up to six digits).
func ParseInterval(b []byte) (Interval, bool) {
	switch string(b) {
	case "infinity":
		return IntervalInf, true
	case "-infinity":
		return IntervalNegInf, true
	}
	if len(b) < 3 || b[0] != 'P' {
		return Interval{}, false
	}
	var years, months, days, hours, mins int64
	var secUS int64
	i := 1
	// order of units: 0 Y, 1 M, 2 D, 3 T, 4 H, 5 M, 6 S.
	stage := 0
	inTime := false
	any := false
	for i < len(b) {
		if b[i] == 'T' {
			if inTime || i+1 >= len(b) {
				return Interval{}, false
			}
			inTime = true
			stage = 4
			i++
			continue
		}
		neg := false
		if b[i] == '-' {
			neg = true
			i++
		}
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == start {
			return Interval{}, false
		}
		n, ok := ParseInt(b[start:i], 0, math.MaxInt64)
		if !ok {
			return Interval{}, false
		}
		var frac int64
		hasFrac := false
		if i < len(b) && b[i] == '.' {
			frac, i, ok = fraction(b, i)
			if !ok {
				return Interval{}, false
			}
			hasFrac = true
		}
		if i >= len(b) {
			return Interval{}, false
		}
		unit := b[i]
		i++
		var slot int
		switch {
		case !inTime && unit == 'Y':
			slot = 0
		case !inTime && unit == 'M':
			slot = 1
		case !inTime && unit == 'D':
			slot = 2
		case inTime && unit == 'H':
			slot = 4
		case inTime && unit == 'M':
			slot = 5
		case inTime && unit == 'S':
			slot = 6
		default:
			return Interval{}, false
		}
		if slot < stage || (hasFrac && slot != 6) {
			return Interval{}, false
		}
		stage = slot + 1
		any = true
		if neg {
			n = -n
			frac = -frac
		}
		switch slot {
		case 0:
			years = n
		case 1:
			months = n
		case 2:
			days = n
		case 4:
			hours = n
		case 5:
			mins = n
		case 6:
			if n > math.MaxInt64/UsecPerSec || n < math.MinInt64/UsecPerSec {
				return Interval{}, false
			}
			secUS = n*UsecPerSec + frac
		}
	}
	if !any {
		return Interval{}, false
	}
	// months = years*12 + months must fit int32.
	if years > math.MaxInt32/12+1 || years < math.MinInt32/12-1 {
		return Interval{}, false
	}
	tm := years*12 + months
	if tm > math.MaxInt32 || tm < math.MinInt32 || days > math.MaxInt32 || days < math.MinInt32 {
		return Interval{}, false
	}
	us, ok := mulAdd(hours, UsecPerHour, 0)
	if !ok {
		return Interval{}, false
	}
	if us, ok = mulAdd(mins, UsecPerMin, us); !ok {
		return Interval{}, false
	}
	if us, ok = mulAdd(secUS, 1, us); !ok {
		return Interval{}, false
	}
	v := Interval{Months: int32(tm), Days: int32(days), Micros: us}
	if v == IntervalInf || v == IntervalNegInf {
		return Interval{}, false
	}
	return v, true
}

// mulAdd returns a*m + c, reporting overflow.
func mulAdd(a, m, c int64) (int64, bool) {
	if a != 0 {
		if a > math.MaxInt64/m || a < math.MinInt64/m {
			return 0, false
		}
	}
	p := a * m
	s := p + c
	if (c > 0 && s < p) || (c < 0 && s > p) {
		return 0, false
	}
	return s, true
}

// AppendInterval appends interval_out's iso_8601 output, byte for byte as
// PostgreSQL's EncodeInterval prints it.
func AppendInterval(dst []byte, v Interval) []byte {
	switch v {
	case IntervalInf:
		return append(dst, "infinity"...)
	case IntervalNegInf:
		return append(dst, "-infinity"...)
	}
	year := int64(v.Months / 12)
	mon := int64(v.Months % 12)
	mday := int64(v.Days)
	t := v.Micros
	hour := t / UsecPerHour
	t -= hour * UsecPerHour
	min := t / UsecPerMin
	t -= min * UsecPerMin
	sec := t / UsecPerSec
	fsec := t - sec*UsecPerSec
	if year == 0 && mon == 0 && mday == 0 && hour == 0 && min == 0 && sec == 0 && fsec == 0 {
		return append(dst, "PT0S"...)
	}
	part := func(dst []byte, n int64, unit byte) []byte {
		if n == 0 {
			return dst
		}
		return append(strconv.AppendInt(dst, n, 10), unit)
	}
	dst = append(dst, 'P')
	dst = part(dst, year, 'Y')
	dst = part(dst, mon, 'M')
	dst = part(dst, mday, 'D')
	if hour != 0 || min != 0 || sec != 0 || fsec != 0 {
		dst = append(dst, 'T')
	}
	dst = part(dst, hour, 'H')
	dst = part(dst, min, 'M')
	if sec != 0 || fsec != 0 {
		if sec < 0 || fsec < 0 {
			dst = append(dst, '-')
		}
		if sec < 0 {
			sec = -sec
		}
		if fsec < 0 {
			fsec = -fsec
		}
		dst = strconv.AppendInt(dst, sec, 10)
		dst = appendFraction(dst, fsec)
		dst = append(dst, 'S')
	}
	return dst
}

// ValidNumeric reports whether b is numeric_out's output: "NaN",
// "Infinity", "-Infinity", or -?digits(.digits)?.
func ValidNumeric(b string) bool {
	switch b {
	case "NaN", "Infinity", "-Infinity":
		return true
	}
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	start := i
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	if i == start {
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		start = i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	return i == len(b)
}

// SplitNumeric splits numeric_out's finite output into sign, integer
// digits and fraction digits (subslices of b, not copies).
func SplitNumeric(b []byte) (neg bool, intPart, fracPart []byte, ok bool) {
	i := 0
	if len(b) > 0 && b[0] == '-' {
		neg = true
		i = 1
	}
	start := i
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	if i == start {
		return false, nil, nil, false
	}
	intPart = b[start:i]
	if i < len(b) {
		if b[i] != '.' {
			return false, nil, nil, false
		}
		i++
		start = i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == start || i != len(b) {
			return false, nil, nil, false
		}
		fracPart = b[start:i]
	}
	return neg, intPart, fracPart, true
}

const hexDigits = "0123456789abcdef"

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// ParseByteaHex decodes byteaout's hex output "\x0a1b..." into a new slice.
func ParseByteaHex(b []byte) ([]byte, bool) {
	if len(b) < 2 || b[0] != '\\' || b[1] != 'x' || len(b)%2 != 0 {
		return nil, false
	}
	out := make([]byte, (len(b)-2)/2)
	for i := range out {
		hi, ok1 := unhex(b[2+2*i])
		lo, ok2 := unhex(b[3+2*i])
		if !ok1 || !ok2 {
			return nil, false
		}
		out[i] = hi<<4 | lo
	}
	return out, true
}

// AppendByteaHex appends the hex form of p.
func AppendByteaHex(dst, p []byte) []byte {
	dst = append(dst, '\\', 'x')
	for _, c := range p {
		dst = append(dst, hexDigits[c>>4], hexDigits[c&15])
	}
	return dst
}

// ValidUUID reports whether b is uuid_out's output: 36 characters,
// lowercase hex in groups 8-4-4-4-12.
func ValidUUID(b []byte) bool {
	if len(b) != 36 {
		return false
	}
	for i, c := range b {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// ErrArrayShape is the cause for array text that is well-formed but has a
// shape one Avro array cannot carry.
var ErrArrayShape = errors.New("not a one-dimensional array with lower bound 1")

// ParseArray parses array_out's output of a one-dimensional array with
// element delimiter delim, e.g. `{a,"b c",NULL,"x\"y"}` or `{}`. For each
// element in order it calls fn with the de-escaped element text (valid only
// during the call; the buffer is reused) and whether it is an unquoted NULL.
// It also accepts what array_in accepts for such arrays: whitespace around
// elements and backslash escapes in unquoted elements. A dimension decoration
// ("[0:2]={...}") or a nested array returns an error wrapping
// ErrArrayShape; other malformed input wraps ErrSyntax.
func ParseArray(b []byte, delim byte, scratch []byte, fn func(elem []byte, null bool) error) ([]byte, error) {
	i := skipSpace(b, 0)
	if i < len(b) && b[i] == '[' {
		return scratch, ErrArrayShape
	}
	if i >= len(b) || b[i] != '{' {
		return scratch, ErrSyntax
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return scratch, arrayEnd(b, i)
	}
	for {
		i = skipSpace(b, i)
		if i >= len(b) {
			return scratch, ErrSyntax
		}
		scratch = scratch[:0]
		null := false
		switch b[i] {
		case '{':
			return scratch, ErrArrayShape
		case '"':
			i++
			closed := false
			for i < len(b) {
				c := b[i]
				if c == '\\' {
					if i+1 >= len(b) {
						return scratch, ErrSyntax
					}
					scratch = append(scratch, b[i+1])
					i += 2
					continue
				}
				if c == '"' {
					closed = true
					i++
					break
				}
				scratch = append(scratch, c)
				i++
			}
			if !closed {
				return scratch, ErrSyntax
			}
			i = skipSpace(b, i)
		default:
			escaped := false
			// keep is the length of scratch up to the last character that is
			// not trailing unescaped whitespace.
			keep := 0
			for i < len(b) {
				c := b[i]
				if c == delim || c == '}' {
					break
				}
				if c == '{' || c == '"' {
					return scratch, ErrSyntax
				}
				if c == '\\' {
					if i+1 >= len(b) {
						return scratch, ErrSyntax
					}
					scratch = append(scratch, b[i+1])
					keep = len(scratch)
					escaped = true
					i += 2
					continue
				}
				scratch = append(scratch, c)
				if !isSpace(c) {
					keep = len(scratch)
				}
				i++
			}
			scratch = scratch[:keep]
			if len(scratch) == 0 {
				return scratch, ErrSyntax
			}
			null = !escaped && len(scratch) == 4 && strings.EqualFold(string(scratch), "NULL")
		}
		if err := fn(scratch, null); err != nil {
			return scratch, err
		}
		if i >= len(b) {
			return scratch, ErrSyntax
		}
		if b[i] == delim {
			i++
			continue
		}
		if b[i] != '}' {
			return scratch, ErrSyntax
		}
		return scratch, arrayEnd(b, i)
	}
}

// skipSpace returns the index of the first byte of b at or after i that is
// not whitespace, or len(b).
func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// arrayEnd checks that only whitespace follows the closing brace at b[i].
func arrayEnd(b []byte, i int) error {
	if skipSpace(b, i+1) != len(b) {
		return ErrSyntax
	}
	return nil
}

// AppendArrayElem appends one element of an array literal, quoted and
// escaped as array_out does: quoting when the element is empty, equals NULL
// in any case, or contains a delimiter, brace, quote, backslash or whitespace.
func AppendArrayElem(dst []byte, elem string, delim byte) []byte {
	quote := len(elem) == 0 || (len(elem) == 4 && strings.EqualFold(elem, "NULL"))
	if !quote {
		for i := 0; i < len(elem); i++ {
			c := elem[i]
			if c == '"' || c == '\\' || c == '{' || c == '}' || c == delim || isSpace(c) {
				quote = true
				break
			}
		}
	}
	if !quote {
		return append(dst, elem...)
	}
	dst = append(dst, '"')
	for i := 0; i < len(elem); i++ {
		c := elem[i]
		if c == '"' || c == '\\' {
			dst = append(dst, '\\')
		}
		dst = append(dst, c)
	}
	return append(dst, '"')
}
