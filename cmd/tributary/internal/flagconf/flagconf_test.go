package flagconf

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// env is a fake environment for Parse.
type env map[string]string

func (e env) lookup(k string) (string, bool) { v, ok := e[k]; return v, ok }

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// withConfig prepends --config for a config file holding body, if any.
func withConfig(t *testing.T, body string, args []string) []string {
	t.Helper()
	if body == "" {
		return args
	}
	return append([]string{"--config", writeFile(t, "c.yaml", body)}, args...)
}

func TestPrecedence(t *testing.T) {
	type typ struct {
		name    string
		declare func(s *Set) func() string // declares "v", returns a formatter
		file    string                     // YAML value for key "v"
		env     string
		flag    []string
		want    [4]string // default, file, env, flag
	}
	types := []typ{
		{"string", func(s *Set) func() string { p := s.String("v", "d", ""); return func() string { return *p } },
			"f", "e", []string{"--v", "x"}, [4]string{"d", "f", "e", "x"}},
		{"int", func(s *Set) func() string { p := s.Int("v", 1, ""); return func() string { return fmt.Sprint(*p) } },
			"2", "3", []string{"--v=4"}, [4]string{"1", "2", "3", "4"}},
		{"bool", func(s *Set) func() string {
			p := s.Bool("v", false, "")
			return func() string { return fmt.Sprint(*p) }
		},
			"true", "false", []string{"--v"}, [4]string{"false", "true", "false", "true"}},
		{"duration", func(s *Set) func() string {
			p := s.Duration("v", time.Second, "")
			return func() string { return p.String() }
		}, "2s", "3m", []string{"-v", "4ms"}, [4]string{"1s", "2s", "3m0s", "4ms"}},
		{"float", func(s *Set) func() string { p := s.Float("v", 1.5, ""); return func() string { return fmt.Sprint(*p) } },
			"2.5", "3.5", []string{"--v", "4.5"}, [4]string{"1.5", "2.5", "3.5", "4.5"}},
		{"list", func(s *Set) func() string {
			p := s.StringList("v", []string{"d"}, "")
			return func() string { return strings.Join(*p, "|") }
		}, "[f1, f2]", "e1,e2", []string{"--v", "x1,x2"}, [4]string{"d", "f1|f2", "e1|e2", "x1|x2"}},
	}
	levels := []struct {
		name                string
		file, env, flag     bool
		want                int
		wantSource          Source
		wantOriginHasPrefix string
	}{
		{"none", false, false, false, 0, SourceDefault, "default"},
		{"file", true, false, false, 1, SourceFile, "config "},
		{"env", false, true, false, 2, SourceEnv, "TRIBUTARY_V"},
		{"file+env", true, true, false, 2, SourceEnv, "TRIBUTARY_V"},
		{"flag", false, false, true, 3, SourceFlag, "--v"},
		{"file+flag", true, false, true, 3, SourceFlag, "--v"},
		{"env+flag", false, true, true, 3, SourceFlag, "--v"},
		{"all", true, true, true, 3, SourceFlag, "--v"},
	}
	for _, ty := range types {
		for _, lv := range levels {
			t.Run(ty.name+"/"+lv.name, func(t *testing.T) {
				s := New("tributary test", nil, Info{})
				get := ty.declare(s)
				var args []string
				e := env{}
				if lv.file {
					args = withConfig(t, "v: "+ty.file+"\n", nil)
				}
				if lv.env {
					e["TRIBUTARY_V"] = ty.env
				}
				if lv.flag {
					args = append(args, ty.flag...)
				}
				if err := s.Parse(args, e.lookup); err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if got := get(); got != ty.want[lv.want] {
					t.Errorf("value = %q, want %q", got, ty.want[lv.want])
				}
				st, _ := s.Lookup("v")
				if st.Source != lv.wantSource || !strings.HasPrefix(st.Origin, lv.wantOriginHasPrefix) {
					t.Errorf("source = %v (%q), want %v (%q...)", st.Source, st.Origin, lv.wantSource, lv.wantOriginHasPrefix)
				}
			})
		}
	}
}

func TestStringListForms(t *testing.T) {
	tests := []struct {
		name   string
		config string
		env    env
		args   []string
		want   []string
	}{
		{"default", "", nil, nil, []string{"localhost:9092"}},
		{"yaml list", "brokers:\n  - a:9092\n  - b:9092\n", nil, nil, []string{"a:9092", "b:9092"}},
		{"yaml flow list", "brokers: [a, b]\n", nil, nil, []string{"a", "b"}},
		{"yaml comma string", "brokers: a,b\n", nil, nil, []string{"a", "b"}},
		{"yaml comma string with spaces", "brokers: 'a, b ,, c'\n", nil, nil, []string{"a", "b", "c"}},
		{"yaml empty list", "brokers: []\n", nil, nil, []string{}},
		{"yaml null is unset", "brokers:\n", nil, nil, []string{"localhost:9092"}},
		{"env", "", env{"TRIBUTARY_BROKERS": "a, b"}, nil, []string{"a", "b"}},
		{"flag replaces default", "", nil, []string{"--brokers", "a,b"}, []string{"a", "b"}},
		{"flag repeated appends", "", nil, []string{"--brokers", "a", "--brokers=b,c"}, []string{"a", "b", "c"}},
		{"flag beats list in file", "brokers: [f]\n", nil, []string{"--brokers", "x"}, []string{"x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New("tributary test", nil, Info{})
			p := s.StringList("brokers", []string{"localhost:9092"}, "Kafka brokers")
			if err := s.Parse(withConfig(t, tt.config, tt.args), tt.env.lookup); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if fmt.Sprintf("%q", *p) != fmt.Sprintf("%q", tt.want) {
				t.Errorf("got %q, want %q", *p, tt.want)
			}
		})
	}
}

// newCapture declares a representative command.
func newCapture(out *bytes.Buffer) (*Set, *string) {
	var w = out
	if w == nil {
		w = new(bytes.Buffer)
	}
	s := New("tributary capture", w, Info{
		Synopsis:    "tributary capture [flags]",
		Description: "Stream changes from PostgreSQL into Kafka.",
		Examples:    "tributary capture --source postgres://db/app --brokers k1:9092,k2:9092\nTRIBUTARY_PASSWORD=... tributary capture --config /etc/tributary.yaml",
	})
	s.String("source", "", "PostgreSQL connection `dsn`")
	s.StringList("brokers", []string{"localhost:9092"}, "Kafka seed brokers")
	s.String("registry", "", "schema registry URL")
	s.Int("partitions", 1, "topic partitions")
	s.Bool("tls", false, "connect with TLS")
	s.Duration("flush-interval", time.Second, "how often to flush")
	pw := s.Secret("password", "PostgreSQL password")
	return s, pw
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name   string
		config string
		want   string // with PATH replaced by the file's path
	}{
		{"unknown key with suggestion", "brokrs: a\n", `config PATH: unknown key "brokrs" (did you mean "brokers"?)`},
		{"unknown key with dash typo", "flush_interval: 5s\n", `config PATH: unknown key "flush_interval" (did you mean "flush-interval"?)`},
		{"unknown key near a secret", "passwrd-file: /x\n", `config PATH: unknown key "passwrd-file" (did you mean "password-file"?)`},
		{"unknown key without suggestion", "zookeeper: z:2181\n", `config PATH: unknown key "zookeeper"`},
		{"int", "partitions: abc\n", `config PATH: invalid value "abc" for "partitions": not an integer`},
		{"bool", "tls: maybe\n", `config PATH: invalid value "maybe" for "tls": not a boolean (use true or false)`},
		{"duration without unit", "flush-interval: 5\n", `config PATH: invalid value "5" for "flush-interval": not a duration`},
		{"list for int", "partitions: [1, 2]\n", `config PATH: invalid value for "partitions": expected a single value, got a list`},
		{"mapping for string", "registry:\n  url: x\n", `config PATH: invalid value for "registry": expected a single value, got a mapping`},
		{"mapping in list", "brokers:\n  - a: b\n", `config PATH: invalid value for "brokers": list item at line 2 is a mapping`},
		{"not a mapping", "- a\n- b\n", `config PATH: expected a mapping of setting names to values, got a list`},
		{"config key", "config: other.yaml\n", `config PATH: key "config" cannot be set inside the config file`},
		{"duplicate key", "registry: a\nregistry: b\n", `config PATH: key "registry" appears twice (line 2)`},
		{"syntax", "registry: [a\n", `config PATH: yaml: line`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newCapture(nil)
			path := writeFile(t, "bad.yaml", tt.config)
			err := s.Parse([]string{"--config", path}, nil)
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			want := strings.ReplaceAll(tt.want, "PATH", path)
			if !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error:\n got %s\nwant %s...", err, want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

func TestConfigAccepted(t *testing.T) {
	tests := []struct{ name, config string }{
		{"empty file", ""},
		{"comment only", "# nothing\n"},
		{"null value", "registry:\npartitions: ~\n"},
		{"anchors", "registry: &r http://r\nsource: *r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newCapture(nil)
			path := writeFile(t, "c.yaml", tt.config)
			if err := s.Parse([]string{"--config", path}, nil); err != nil {
				t.Fatalf("Parse: %v", err)
			}
		})
	}
}

func TestMissingConfigFile(t *testing.T) {
	s, _ := newCapture(nil)
	err := s.Parse(nil, env{"TRIBUTARY_CONFIG": "/nonexistent/t.yaml"}.lookup)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/t.yaml") {
		t.Fatalf("err = %v, want one naming the file", err)
	}
}

func TestWrongTypes(t *testing.T) {
	tests := []struct {
		name string
		env  env
		args []string
		want string
	}{
		{"env int", env{"TRIBUTARY_PARTITIONS": "abc"}, nil, `TRIBUTARY_PARTITIONS: invalid value "abc" for --partitions: not an integer`},
		{"env int range", env{"TRIBUTARY_PARTITIONS": "99999999999999999999"}, nil, `TRIBUTARY_PARTITIONS: invalid value "99999999999999999999" for --partitions: integer out of range`},
		{"env bool", env{"TRIBUTARY_TLS": "yes please"}, nil, `TRIBUTARY_TLS: invalid value "yes please" for --tls: not a boolean`},
		{"env duration", env{"TRIBUTARY_FLUSH_INTERVAL": "soon"}, nil, `TRIBUTARY_FLUSH_INTERVAL: invalid value "soon" for --flush-interval: not a duration`},
		// A bad environment value is reported even when a flag overrides it.
		{"env overridden", env{"TRIBUTARY_PARTITIONS": "abc"}, []string{"--partitions", "3"}, `TRIBUTARY_PARTITIONS: invalid value "abc"`},
		{"flag int", nil, []string{"--partitions", "abc"}, `invalid value "abc" for flag -partitions: not an integer`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newCapture(nil)
			err := s.Parse(tt.args, tt.env.lookup)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error:\n got %v\nwant %s...", err, tt.want)
			}
		})
	}
}

func TestRequired(t *testing.T) {
	tests := []struct {
		name   string
		config string
		env    env
		args   []string
		want   string // "" means success
	}{
		{"missing", "", nil, nil, `missing required setting --source (flag, TRIBUTARY_SOURCE, or "source" in --config)`},
		{"empty flag", "", nil, []string{"--source="}, `missing required setting --source`},
		{"empty env is unset", "", env{"TRIBUTARY_SOURCE": ""}, nil, `missing required setting --source`},
		{"flag", "", nil, []string{"--source", "postgres://x"}, ""},
		{"env", "", env{"TRIBUTARY_SOURCE": "postgres://x"}, nil, ""},
		{"file", "source: postgres://x\n", nil, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New("tributary test", nil, Info{})
			s.String("source", "", "")
			s.Int("slot", 0, "")
			s.Require("source")
			err := s.Parse(withConfig(t, tt.config, tt.args), tt.env.lookup)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Parse: %v", err)
			case tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want)):
				t.Errorf("error:\n got %v\nwant %s", err, tt.want)
			}
		})
	}
}

func TestRequiredSeveral(t *testing.T) {
	s := New("tributary test", nil, Info{})
	s.String("source", "", "")
	s.StringList("brokers", nil, "")
	s.Secret("password", "")
	s.Require("source", "brokers", "password")
	err := s.Parse(nil, nil)
	for _, want := range []string{
		`missing required setting --source (flag, TRIBUTARY_SOURCE, or "source" in --config)`,
		`missing required setting --brokers (flag, TRIBUTARY_BROKERS, or "brokers" in --config)`,
		`missing required setting password (TRIBUTARY_PASSWORD, --password-file PATH, or "password-file" in --config)`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v\nlacks %s", err, want)
		}
	}
}

const hunter2 = "hunter2-s3cr3t"

func TestSecret(t *testing.T) {
	pwFile := writeFile(t, "pw", hunter2+"\n")
	crlfFile := writeFile(t, "pw-crlf", hunter2+"\r\n")
	otherFile := writeFile(t, "other", "from-file\n")
	tests := []struct {
		name       string
		config     string
		env        env
		args       []string
		want       string
		wantSource Source
		wantErr    string
	}{
		{"unset", "", nil, nil, "", SourceDefault, ""},
		{"env", "", env{"TRIBUTARY_PASSWORD": hunter2}, nil, hunter2, SourceEnv, ""},
		{"file flag", "", nil, []string{"--password-file", pwFile}, hunter2, SourceFlag, ""},
		{"file flag crlf", "", nil, []string{"--password-file=" + crlfFile}, hunter2, SourceFlag, ""},
		{"file env", "", env{"TRIBUTARY_PASSWORD_FILE": pwFile}, nil, hunter2, SourceEnv, ""},
		{"file in config", "password-file: " + pwFile + "\n", nil, nil, hunter2, SourceFile, ""},
		{"file flag beats env", "", env{"TRIBUTARY_PASSWORD": "from-env"}, []string{"--password-file", pwFile}, hunter2, SourceFlag, ""},
		{"env beats config file", "password-file: " + otherFile + "\n", env{"TRIBUTARY_PASSWORD": hunter2}, nil, hunter2, SourceEnv, ""},
		{"file env beats config file", "password-file: " + otherFile + "\n", env{"TRIBUTARY_PASSWORD_FILE": pwFile}, nil, hunter2, SourceEnv, ""},
		{"env and file env conflict", "", env{"TRIBUTARY_PASSWORD": hunter2, "TRIBUTARY_PASSWORD_FILE": pwFile}, nil, "", 0,
			"both TRIBUTARY_PASSWORD and TRIBUTARY_PASSWORD_FILE are set"},
		{"flag rejected", "", nil, []string{"--password", hunter2}, "", 0,
			"--password cannot be given on the command line, where other users could see it; set TRIBUTARY_PASSWORD or use --password-file PATH"},
		{"flag= rejected", "", nil, []string{"--password=" + hunter2, "--source", "x"}, "", 0, "--password cannot be given on the command line"},
		{"flag without value rejected", "", nil, []string{"--password"}, "", 0, "--password cannot be given on the command line"},
		{"single dash rejected", "", env{"TRIBUTARY_PASSWORD": "ok"}, []string{"-password", hunter2}, "", 0, "--password cannot be given on the command line"},
		{"inline in config rejected", "password: " + hunter2 + "\n", nil, nil, "", 0,
			`config PATH: key "password" is a secret and cannot be written in the config file; use "password-file" (a file holding it) or set TRIBUTARY_PASSWORD`},
		{"unreadable file", "", nil, []string{"--password-file", "/nonexistent/pw"}, "", 0,
			"--password-file: reading --password: open /nonexistent/pw: no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			s, pw := newCapture(&out)
			args := withConfig(t, tt.config, tt.args)
			err := s.Parse(args, tt.env.lookup)
			if tt.wantErr != "" {
				want := tt.wantErr
				if tt.config != "" {
					want = strings.ReplaceAll(want, "PATH", args[1])
				}
				if err == nil || !strings.HasPrefix(err.Error(), want) {
					t.Fatalf("error:\n got %v\nwant %s...", err, want)
				}
				if strings.Contains(err.Error(), hunter2) {
					t.Fatalf("error leaks the secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if *pw != tt.want {
				t.Errorf("secret = %q, want %q", *pw, tt.want)
			}
			st, _ := s.Lookup("password")
			if st.Source != tt.wantSource {
				t.Errorf("source = %v, want %v", st.Source, tt.wantSource)
			}
			assertNoSecret(t, s, &out)
		})
	}
}

// assertNoSecret checks every output of s for hunter2.
func assertNoSecret(t *testing.T, s *Set, out *bytes.Buffer) {
	t.Helper()
	var usage bytes.Buffer
	s.WriteUsage(&usage)
	all := out.String() + usage.String() + fmt.Sprintf("%+v", s.Settings())
	for _, f := range []string{"password", "password-file"} {
		st, _ := s.Lookup(f)
		all += fmt.Sprintf("%+v", st)
	}
	if strings.Contains(all, hunter2) {
		t.Errorf("secret leaked:\n%s", all)
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	// The secret is set, then every other error path and the help text run.
	tests := []struct {
		name string
		args []string
		env  env
	}{
		{"help", []string{"--help"}, env{"TRIBUTARY_PASSWORD": hunter2}},
		{"missing required", nil, env{"TRIBUTARY_PASSWORD": hunter2}},
		{"bad env", nil, env{"TRIBUTARY_PASSWORD": hunter2, "TRIBUTARY_PARTITIONS": "x"}},
		{"unknown flag", []string{"--pasword", hunter2}, nil},
		{"secret as flag", []string{"--password", hunter2}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			s, _ := newCapture(&out)
			s.Require("source")
			err := s.Parse(tt.args, tt.env.lookup)
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			if strings.Contains(err.Error(), hunter2) {
				t.Errorf("error leaks the secret: %v", err)
			}
			assertNoSecret(t, s, &out)
		})
	}
}

func TestSettingsRedacted(t *testing.T) {
	s, pw := newCapture(nil)
	if err := s.Parse(nil, env{"TRIBUTARY_PASSWORD": hunter2}.lookup); err != nil {
		t.Fatal(err)
	}
	if *pw != hunter2 {
		t.Fatalf("secret = %q", *pw)
	}
	st, ok := s.Lookup("password")
	if !ok || st.Value != "<redacted>" || !st.Secret || st.Origin != "TRIBUTARY_PASSWORD" {
		t.Errorf("Lookup(password) = %+v", st)
	}
}

func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "-help"} {
		t.Run(arg, func(t *testing.T) {
			var out bytes.Buffer
			s, _ := newCapture(&out)
			s.Require("source")
			err := s.Parse([]string{"--partitions", "2", arg}, nil)
			if !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("err = %v, want flag.ErrHelp", err)
			}
			help := out.String()
			for _, want := range []string{
				"Usage: tributary capture [flags]\n",
				"Stream changes from PostgreSQL into Kafka.",
				"  --source dsn\n        PostgreSQL connection dsn (required; env TRIBUTARY_SOURCE)\n",
				`--brokers list`, `(default "localhost:9092"; env TRIBUTARY_BROKERS)`,
				"--partitions int", "(default 1; env TRIBUTARY_PARTITIONS)",
				"  --tls\n", "env TRIBUTARY_TLS)",
				"--flush-interval duration", "(default 1s; env TRIBUTARY_FLUSH_INTERVAL)",
				"--password-file path", "TRIBUTARY_PASSWORD", "env TRIBUTARY_PASSWORD_FILE",
				"--config file", "env TRIBUTARY_CONFIG",
				"Precedence: command-line flag >\nenvironment variable > config file > default.",
				"Examples:\n  tributary capture --source postgres://db/app",
			} {
				if !strings.Contains(help, want) {
					t.Errorf("help lacks %q:\n%s", want, help)
				}
			}
			if strings.Contains(help, "  --password ") || strings.Contains(help, "  --password\n") {
				t.Errorf("help offers --password as a flag:\n%s", help)
			}
		})
	}
}

func TestCommandLineErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--brokrs", "a"}, "unknown flag --brokrs (did you mean --brokers?); run 'tributary capture --help' for usage"},
		{[]string{"-passwrd", "x"}, "unknown flag --passwrd (did you mean --password-file?); run 'tributary capture --help' for usage"},
		{[]string{"--zzz"}, "unknown flag --zzz; run 'tributary capture --help' for usage"},
		{[]string{"--source"}, "flag needs an argument: -source; run 'tributary capture --help' for usage"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			s, _ := newCapture(&out)
			err := s.Parse(tt.args, nil)
			if err == nil || err.Error() != tt.want {
				t.Errorf("error:\n got %v\nwant %s", err, tt.want)
			}
			if out.Len() != 0 {
				t.Errorf("Parse printed on error:\n%s", out.String())
			}
		})
	}
}

func TestConfigFromEnv(t *testing.T) {
	envFile := writeFile(t, "env.yaml", "registry: http://env-config\npartitions: 7\n")
	flagFile := writeFile(t, "flag.yaml", "registry: http://flag-config\n")
	tests := []struct {
		name       string
		args       []string
		env        env
		want       string
		wantConfig string
		wantSource Source
	}{
		{"TRIBUTARY_CONFIG", nil, env{"TRIBUTARY_CONFIG": envFile}, "http://env-config", envFile, SourceEnv},
		{"--config beats TRIBUTARY_CONFIG", []string{"--config", flagFile}, env{"TRIBUTARY_CONFIG": envFile}, "http://flag-config", flagFile, SourceFlag},
		{"env beats TRIBUTARY_CONFIG file", nil, env{"TRIBUTARY_CONFIG": envFile, "TRIBUTARY_REGISTRY": "http://env"}, "http://env", envFile, SourceEnv},
		{"no config", nil, nil, "", "", SourceDefault},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newCapture(nil)
			reg := s.byName["registry"].val
			if err := s.Parse(tt.args, tt.env.lookup); err != nil {
				t.Fatal(err)
			}
			if reg.String() != tt.want || s.ConfigFile() != tt.wantConfig {
				t.Errorf("registry = %q from %q, want %q from %q", reg.String(), s.ConfigFile(), tt.want, tt.wantConfig)
			}
			if st, _ := s.Lookup(ConfigFlag); st.Source != tt.wantSource {
				t.Errorf("config source = %v, want %v", st.Source, tt.wantSource)
			}
		})
	}
}

func TestArgsAndSettings(t *testing.T) {
	s, _ := newCapture(nil)
	err := s.Parse([]string{"--tls", "pos1", "pos2"}, env{"TRIBUTARY_PARTITIONS": "0x10"}.lookup)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.Args(), " "); got != "pos1 pos2" {
		t.Errorf("Args = %q", got)
	}
	got := map[string]string{}
	for _, st := range s.Settings() {
		got[st.Name] = st.Value + " " + st.Source.String() + " " + st.Origin
	}
	for name, want := range map[string]string{
		"tls":            "true flag --tls",
		"partitions":     "16 env TRIBUTARY_PARTITIONS",
		"brokers":        "localhost:9092 default default",
		"flush-interval": "1s default default",
		"password":       " default default",
	} {
		if got[name] != want {
			t.Errorf("%s: %q, want %q", name, got[name], want)
		}
	}
}

func TestParseTwice(t *testing.T) {
	s, _ := newCapture(nil)
	if err := s.Parse(nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Parse(nil, nil); err == nil {
		t.Error("second Parse succeeded")
	}
}

func TestDeclarationPanics(t *testing.T) {
	tests := map[string]func(s *Set){
		"upper case":      func(s *Set) { s.String("Source", "", "") },
		"underscore":      func(s *Set) { s.String("flush_interval", "", "") },
		"reserved config": func(s *Set) { s.String("config", "", "") },
		"reserved help":   func(s *Set) { s.Bool("help", false, "") },
		"duplicate":       func(s *Set) { s.Int("n", 0, ""); s.Int("n", 0, "") },
		"secret clash":    func(s *Set) { s.String("password-file", "", ""); s.Secret("password", "") },
		"require unknown": func(s *Set) { s.Require("nope") },
	}
	for name, f := range tests {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			f(New("tributary test", nil, Info{}))
		})
	}
}

func TestEnvName(t *testing.T) {
	for in, want := range map[string]string{
		"source":         "TRIBUTARY_SOURCE",
		"flush-interval": "TRIBUTARY_FLUSH_INTERVAL",
		"password-file":  "TRIBUTARY_PASSWORD_FILE",
	} {
		if got := EnvName(in); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", in, got, want)
		}
	}
}
