// Package flagconf loads one tributary command's settings from command-line
// flags, TRIBUTARY_* environment variables and a YAML config file, on top of
// the standard library flag package.
//
// A command creates a [Set] with [New], declares its settings with the typed
// methods ([Set.String], [Set.Int], [Set.Bool], [Set.Duration], [Set.Float],
// [Set.StringList], [Set.Secret]), marks mandatory ones with [Set.Require] and
// calls [Set.Parse] once. Each declaration returns a pointer that holds the
// final value after a successful Parse.
//
// # Sources and precedence
//
// Every setting named "some-name" can be given as
//
//   - the command-line flag --some-name (or -some-name),
//   - the environment variable TRIBUTARY_SOME_NAME (see [EnvName]),
//   - the key "some-name" in the YAML file named by --config or
//     TRIBUTARY_CONFIG.
//
// When a setting is given in several places the winner is, strictly:
//
//	explicit command-line flag > environment variable > config file > default
//
// An environment variable that is set but empty counts as not set. Every value
// that is given is validated, including one that is overridden by a source of
// higher precedence, so a stale wrong value never lurks unnoticed.
//
// # Config file
//
// The config file is a YAML mapping whose keys are exactly the flag names.
// Scalars are read as their text, so "partitions: 3" and "partitions: '3'"
// are the same; a null value ("key:" with nothing after it) counts as not set.
// A [Set.StringList] accepts a YAML list or a comma-separated string. Unknown
// keys, duplicate keys and the key "config" itself are errors; an unknown key
// error suggests the closest known key.
//
// # Secrets
//
// A setting declared with [Set.Secret] (say "password") is never accepted as
// --password on the command line, where it would be visible in the process
// list, nor as "password:" in the config file. It can only be given as the
// environment variable TRIBUTARY_PASSWORD or as a file to read: the flag
// --password-file PATH, its variable TRIBUTARY_PASSWORD_FILE or the config key
// "password-file". The file's trailing newlines are trimmed; a relative path
// is relative to the working directory, also in the config file. Precedence is
// --password-file > TRIBUTARY_PASSWORD > TRIBUTARY_PASSWORD_FILE >
// "password-file" in the config; setting both TRIBUTARY_PASSWORD and
// TRIBUTARY_PASSWORD_FILE is an error. Nothing this package prints or returns
// (usage, errors, [Setting.Value]) ever contains a secret's value.
//
// # Errors and help
//
// Parse never writes to standard error and never exits. "-h" or "--help"
// writes the usage text to the writer given to New and returns
// [flag.ErrHelp]; the caller should exit 0. Any other error is a single
// sentence (several, joined by newlines, only when several required settings
// are missing) that names the offending flag, variable or config key, suitable
// for printing as "tributary <cmd>: <error>" before exiting 2.
//
// Declaring an invalid or duplicate setting name panics: that is a programming
// error, as in the flag package. The package has no package-level mutable
// state; a Set is not safe for concurrent use.
package flagconf

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"
)

// EnvPrefix is the prefix of every environment variable read by this package.
const EnvPrefix = "TRIBUTARY_"

// ConfigFlag is the name of the flag, declared by every [Set], that names the
// YAML config file. Its environment variable is TRIBUTARY_CONFIG.
const ConfigFlag = "config"

// redacted is shown instead of a secret's value.
const redacted = "<redacted>"

// Source tells where a setting's final value came from. Sources are ordered by
// precedence: a higher Source overrides a lower one.
type Source int

const (
	// SourceDefault means the setting was not given; it has its default.
	SourceDefault Source = iota
	// SourceFile means the value came from the --config file.
	SourceFile
	// SourceEnv means the value came from a TRIBUTARY_* environment variable.
	SourceEnv
	// SourceFlag means the value came from an explicit command-line flag.
	SourceFlag
)

// String returns "default", "file", "env" or "flag".
func (s Source) String() string {
	switch s {
	case SourceDefault:
		return "default"
	case SourceFile:
		return "file"
	case SourceEnv:
		return "env"
	case SourceFlag:
		return "flag"
	}
	return fmt.Sprintf("Source(%d)", int(s))
}

// Setting describes one setting after [Set.Parse], for diagnostics such as a
// --print-config option.
type Setting struct {
	// Name is the flag name, without dashes.
	Name string
	// Value is the final value as text: lists are comma-separated. For a
	// secret it is "<redacted>" when set and "" when not; never the secret.
	Value string
	// Source is where the value came from.
	Source Source
	// Origin names the place precisely: "--partitions",
	// "TRIBUTARY_PARTITIONS", "config /etc/tributary.yaml", or "default".
	// For a secret read from a file it also names that file.
	Origin string
	// Env is the setting's environment variable, e.g. "TRIBUTARY_PARTITIONS".
	Env string
	// Required reports whether the setting was marked with [Set.Require].
	Required bool
	// Secret reports whether the setting was declared with [Set.Secret].
	Secret bool
}

// Info is the help text of a command, printed by --help.
type Info struct {
	// Synopsis is the usage line, e.g. "tributary capture [flags]". If empty,
	// "<name> [flags]" is used.
	Synopsis string
	// Description is one or more paragraphs explaining the command.
	Description string
	// Examples are example invocations, printed indented under "Examples:".
	Examples string
}

// Set is the set of settings of one command. Create it with [New].
type Set struct {
	name     string
	info     Info
	out      io.Writer
	fs       *flag.FlagSet
	settings []*setting // declaration order; includes config and -file settings
	byName   map[string]*setting
	config   *string
	parsed   bool
}

// setting is one declared name. A secret "password" is two settings: the
// secret itself (secret == true, not in the FlagSet as a usable flag) and the
// ordinary string setting "password-file" (fileFor points at the secret).
type setting struct {
	name     string
	usage    string
	val      value // nil for secrets
	def      string
	required bool

	secret   bool
	secretP  *string
	fileFlag *setting // on a secret: its "-file" setting
	fileFor  *setting // on a "-file" setting: its secret
	trapped  bool     // a secret was given as a plain command-line flag

	source Source
	origin string
}

// New returns an empty Set for the command name, such as "tributary capture",
// which appears in the usage text and in error hints. Help output is written
// to out. The --config flag is declared already.
func New(name string, out io.Writer, info Info) *Set {
	if out == nil {
		out = io.Discard
	}
	s := &Set{
		name:   name,
		info:   info,
		out:    out,
		fs:     flag.NewFlagSet(name, flag.ContinueOnError),
		byName: make(map[string]*setting),
	}
	// The flag package must not print anything itself: errors are returned
	// and help is printed by Parse.
	s.fs.SetOutput(io.Discard)
	s.fs.Usage = func() {}
	s.config = new(string)
	s.add(ConfigFlag, "YAML config `file`; its keys are the flag names", &stringValue{p: s.config})
	return s
}

var nameRE = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)

func (s *Set) checkName(name string) {
	if !nameRE.MatchString(name) {
		panic(fmt.Sprintf("flagconf: invalid setting name %q: use lower-case letters, digits and single dashes", name))
	}
	if name == "h" || name == "help" {
		panic(fmt.Sprintf("flagconf: setting name %q is reserved for help", name))
	}
	if _, dup := s.byName[name]; dup {
		panic(fmt.Sprintf("flagconf: setting %q declared twice", name))
	}
}

func (s *Set) add(name, usage string, v value) *setting {
	s.checkName(name)
	st := &setting{name: name, usage: usage, val: v, def: v.String(), origin: "default"}
	s.fs.Var(v, name, usage)
	s.settings = append(s.settings, st)
	s.byName[name] = st
	return st
}

// String declares a string setting and returns a pointer to its value.
func (s *Set) String(name, def, usage string) *string {
	p := &def
	s.add(name, usage, &stringValue{p: p})
	return p
}

// Int declares an int setting and returns a pointer to its value. Values are
// parsed like Go integer literals (base prefixes such as 0x are accepted).
func (s *Set) Int(name string, def int, usage string) *int {
	p := &def
	s.add(name, usage, &intValue{p: p})
	return p
}

// Bool declares a bool setting and returns a pointer to its value. On the
// command line "--name" alone means true; "--name=false" is also accepted.
// Elsewhere the value is parsed by [strconv.ParseBool].
func (s *Set) Bool(name string, def bool, usage string) *bool {
	p := &def
	s.add(name, usage, &boolValue{p: p})
	return p
}

// Duration declares a [time.Duration] setting, written like "500ms" or
// "1m30s", and returns a pointer to its value.
func (s *Set) Duration(name string, def time.Duration, usage string) *time.Duration {
	p := &def
	s.add(name, usage, &durationValue{p: p})
	return p
}

// Float declares a float64 setting and returns a pointer to its value.
func (s *Set) Float(name string, def float64, usage string) *float64 {
	p := &def
	s.add(name, usage, &floatValue{p: p})
	return p
}

// StringList declares a list setting and returns a pointer to its value. On
// the command line and in the environment the list is comma-separated
// ("a:9092,b:9092"); items are trimmed and empty items dropped. Repeating the
// flag appends ("--brokers a --brokers b"). In the config file it is either a
// YAML list or a comma-separated string. The default slice is copied.
func (s *Set) StringList(name string, def []string, usage string) *[]string {
	p := new([]string)
	*p = append([]string(nil), def...)
	s.add(name, usage, &listValue{p: p})
	return p
}

// Secret declares a secret string setting, such as a password, and returns a
// pointer to its value. It also declares the setting "<name>-file". See the
// package documentation for the ways a secret may be given; it is never
// accepted as a plain --<name> flag or "<name>:" config key.
func (s *Set) Secret(name, usage string) *string {
	s.checkName(name)
	p := new(string)
	sec := &setting{name: name, usage: usage, secret: true, secretP: p, origin: "default"}
	// A trap: "--name value" parses (consuming the value, which is dropped
	// unseen) so that Parse can explain the rule instead of the flag package
	// reporting an unknown flag.
	s.fs.Var(trapValue{hit: &sec.trapped}, name, "")
	s.settings = append(s.settings, sec)
	s.byName[name] = sec
	fileUsage := fmt.Sprintf("`path` of a file holding %s; or set %s instead (this secret is never accepted as a plain flag)",
		usage, EnvName(name))
	ff := s.add(name+"-file", fileUsage, &stringValue{p: new(string)})
	ff.fileFor = sec
	sec.fileFlag = ff
	return p
}

// Require marks the named settings as mandatory: Parse fails if one is not
// given by any source, or is given as an empty string or list. It panics if a
// name was not declared.
func (s *Set) Require(names ...string) {
	for _, n := range names {
		st, ok := s.byName[n]
		if !ok || st.fileFor != nil || n == ConfigFlag {
			panic(fmt.Sprintf("flagconf: Require(%q): no such setting", n))
		}
		st.required = true
	}
}

// EnvName returns the environment variable for the setting name:
// TRIBUTARY_ followed by the name in upper case with dashes turned into
// underscores, e.g. "flush-interval" gives "TRIBUTARY_FLUSH_INTERVAL".
func EnvName(name string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Args returns the command-line arguments left after the flags.
func (s *Set) Args() []string { return s.fs.Args() }

// ConfigFile returns the path of the config file that was read, or "" if none.
func (s *Set) ConfigFile() string { return *s.config }

// Settings describes every declared setting, in declaration order (--config
// first), with its final value and where that came from. Secrets are
// redacted.
func (s *Set) Settings() []Setting {
	out := make([]Setting, 0, len(s.settings))
	for _, st := range s.settings {
		out = append(out, st.describe())
	}
	return out
}

// Lookup describes the named setting; ok is false if it was not declared.
func (s *Set) Lookup(name string) (st Setting, ok bool) {
	x, ok := s.byName[name]
	if !ok {
		return Setting{}, false
	}
	return x.describe(), true
}

func (st *setting) describe() Setting {
	d := Setting{
		Name:     st.name,
		Source:   st.source,
		Origin:   st.origin,
		Env:      EnvName(st.name),
		Required: st.required,
		Secret:   st.secret,
	}
	switch {
	case !st.secret:
		d.Value = st.val.String()
	case *st.secretP != "":
		d.Value = redacted
	}
	return d
}

// Parse reads the command line args (without the program and command names),
// then the environment through lookupEnv (normally [os.LookupEnv]; nil means
// an empty environment), then the config file, and stores the winning value
// of every setting. It must be called once. On -h or --help it prints the
// usage and returns [flag.ErrHelp].
func (s *Set) Parse(args []string, lookupEnv func(string) (string, bool)) error {
	if s.parsed {
		return errors.New("flagconf: Parse called twice")
	}
	s.parsed = true
	if lookupEnv == nil {
		lookupEnv = func(string) (string, bool) { return "", false }
	}
	getenv := func(key string) (string, bool) {
		v, ok := lookupEnv(key)
		return v, ok && v != ""
	}

	if err := s.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			s.PrintUsage()
			return flag.ErrHelp
		}
		if name, ok := strings.CutPrefix(err.Error(), "flag needs an argument: -"); ok {
			if st := s.byName[name]; st != nil && st.secret {
				return secretOnCommandLine(st)
			}
		}
		return s.commandLineError(err)
	}
	for _, st := range s.settings {
		if st.trapped {
			return secretOnCommandLine(st)
		}
	}
	s.fs.Visit(func(f *flag.Flag) {
		if st := s.byName[f.Name]; st != nil {
			st.source, st.origin = SourceFlag, "--"+f.Name
		}
	})

	// Environment: validate every variable that is set.
	envVals := make(map[*setting]any)
	for _, st := range s.settings {
		if st.secret {
			continue
		}
		key := EnvName(st.name)
		raw, ok := getenv(key)
		if !ok {
			continue
		}
		x, err := st.val.parse(raw)
		if err != nil {
			return fmt.Errorf("%s: invalid value %q for --%s: %v", key, raw, st.name, err)
		}
		envVals[st] = x
	}

	// The config file: --config beats TRIBUTARY_CONFIG.
	cfg := s.byName[ConfigFlag]
	if x, ok := envVals[cfg]; ok && cfg.source != SourceFlag {
		cfg.val.store(x)
		cfg.source, cfg.origin = SourceEnv, EnvName(ConfigFlag)
	}
	fileVals, err := s.loadConfig(*s.config)
	if err != nil {
		return err
	}

	for _, st := range s.settings {
		if st.secret || st == cfg || st.source == SourceFlag {
			continue
		}
		if x, ok := envVals[st]; ok {
			st.val.store(x)
			st.source, st.origin = SourceEnv, EnvName(st.name)
		} else if x, ok := fileVals[st]; ok {
			st.val.store(x)
			st.source, st.origin = SourceFile, "config "+*s.config
		}
	}

	for _, st := range s.settings {
		if st.secret {
			if err := s.resolveSecret(st, getenv); err != nil {
				return err
			}
		}
	}

	var missing []error
	for _, st := range s.settings {
		if !st.required {
			continue
		}
		empty := st.source == SourceDefault
		if st.secret {
			empty = empty || *st.secretP == ""
		} else {
			empty = empty || st.val.empty()
		}
		if !empty {
			continue
		}
		if st.secret {
			missing = append(missing, fmt.Errorf("missing required setting %s (%s, --%s-file PATH, or %q in --config)",
				st.name, EnvName(st.name), st.name, st.name+"-file"))
		} else {
			missing = append(missing, fmt.Errorf("missing required setting --%s (flag, %s, or %q in --config)",
				st.name, EnvName(st.name), st.name))
		}
	}
	return errors.Join(missing...)
}

func secretOnCommandLine(st *setting) error {
	return fmt.Errorf("--%s cannot be given on the command line, where other users could see it; set %s or use --%s-file PATH",
		st.name, EnvName(st.name), st.name)
}

// resolveSecret applies --x-file > TRIBUTARY_X > TRIBUTARY_X_FILE > "x-file".
func (s *Set) resolveSecret(sec *setting, getenv func(string) (string, bool)) error {
	ff := sec.fileFlag
	path := ff.val.String()
	direct, hasDirect := getenv(EnvName(sec.name))
	if hasDirect && ff.source == SourceEnv {
		return fmt.Errorf("both %s and %s are set; set only one", EnvName(sec.name), EnvName(ff.name))
	}
	switch {
	case path != "" && ff.source == SourceFlag:
	case hasDirect:
		*sec.secretP = direct
		sec.source, sec.origin = SourceEnv, EnvName(sec.name)
		return nil
	case path != "" && ff.source != SourceDefault:
	default:
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		// The *PathError names the file, never its contents.
		return fmt.Errorf("%s: reading --%s: %v", ff.origin, sec.name, err)
	}
	*sec.secretP = strings.TrimRight(string(data), "\r\n")
	sec.source, sec.origin = ff.source, ff.origin+" ("+path+")"
	return nil
}

// commandLineError turns a flag package error into one line with a hint.
func (s *Set) commandLineError(err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		name = strings.TrimLeft(name, "-")
		msg = "unknown flag --" + name
		if sug := suggest(name, s.knownKeys(true)); sug != "" {
			msg += " (did you mean --" + sug + "?)"
		}
	}
	return fmt.Errorf("%s; run '%s --help' for usage", msg, s.name)
}

// knownKeys lists the names a user may type, mapping a secret's name to its
// "-file" setting. withConfig includes "config" (valid on the command line).
func (s *Set) knownKeys(withConfig bool) map[string]string {
	keys := make(map[string]string, len(s.settings))
	for _, st := range s.settings {
		switch {
		case st.secret:
			keys[st.name] = st.name + "-file"
		case st.name == ConfigFlag && !withConfig:
		default:
			keys[st.name] = st.name
		}
	}
	return keys
}
