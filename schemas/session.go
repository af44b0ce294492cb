package schemas

import "maps"

// sessionParams are the settings under which PostgreSQL renders values as
// text the way this package's type codecs parse them. It is only read.
var sessionParams = map[string]string{
	"DateStyle":          "ISO, MDY",
	"IntervalStyle":      "iso_8601",
	"TimeZone":           "UTC",
	"extra_float_digits": "3",
	"bytea_output":       "hex",
	"application_name":   "tributary",
}

// SessionParams returns a fresh copy of the session settings that are part
// of the event contract: those under which PostgreSQL renders values as text
// for pgoutput and COPY (DateStyle, IntervalStyle, TimeZone,
// extra_float_digits, bytea_output), which the type codecs of this package
// parse, and application_name "tributary". The producer sets them on every
// source connection, keeping an application_name its DSN sets; a program
// that must read values in the same text forms (verify, reseed) sets them on
// its connections, usually with its own application_name.
func SessionParams() map[string]string { return maps.Clone(sessionParams) }
