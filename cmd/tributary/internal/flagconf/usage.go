package flagconf

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// PrintUsage writes the help text to the writer given to [New]: synopsis,
// description, every flag with its default and environment variable, and the
// examples. It never shows a secret's value.
func (s *Set) PrintUsage() { s.WriteUsage(s.out) }

// WriteUsage writes the help text described at [Set.PrintUsage] to w.
func (s *Set) WriteUsage(w io.Writer) {
	var b strings.Builder
	syn := s.info.Synopsis
	if syn == "" {
		syn = s.name + " [flags]"
	}
	fmt.Fprintf(&b, "Usage: %s\n", syn)
	if d := strings.TrimSpace(s.info.Description); d != "" {
		fmt.Fprintf(&b, "\n%s\n", d)
	}
	b.WriteString("\nFlags:\n")
	// Declared settings first, --config (declared by New) last.
	for _, st := range s.settings[1:] {
		s.writeFlag(&b, st)
	}
	s.writeFlag(&b, s.settings[0])
	fmt.Fprintf(&b, "  -h, --help\n        show this help\n")
	fmt.Fprintf(&b, "\nEvery flag --some-name can also be set as the environment variable %sSOME_NAME\n"+
		"or as the key \"some-name\" in the --config file. Precedence: command-line flag >\n"+
		"environment variable > config file > default.\n", EnvPrefix)
	if ex := strings.Trim(s.info.Examples, "\n"); strings.TrimSpace(ex) != "" {
		b.WriteString("\nExamples:\n")
		for _, line := range strings.Split(ex, "\n") {
			if strings.TrimSpace(line) == "" {
				b.WriteString("\n")
				continue
			}
			b.WriteString("  " + line + "\n")
		}
	}
	io.WriteString(w, b.String())
}

func (s *Set) writeFlag(b *strings.Builder, st *setting) {
	if st.secret {
		return // shown through its -file setting
	}
	name, usage := flag.UnquoteUsage(&flag.Flag{Name: st.name, Usage: st.usage, Value: st.val})
	if name == "value" { // no `placeholder` in the usage text
		name = st.val.typeName()
	}
	line := "  --" + st.name
	if name != "" {
		line += " " + name
	}
	var notes []string
	if st.required {
		notes = append(notes, "required")
	}
	if sec := st.fileFor; sec != nil && sec.required {
		notes = append(notes, "required")
	}
	if st.def != "" && st.def != "0" && st.def != "false" && st.def != "0s" {
		def := st.def
		if _, ok := st.val.(*stringValue); ok {
			def = strconv.Quote(def)
		} else if _, ok := st.val.(*listValue); ok {
			def = strconv.Quote(def)
		}
		notes = append(notes, "default "+def)
	}
	notes = append(notes, "env "+EnvName(st.name))
	fmt.Fprintf(b, "%s\n        %s (%s)\n", line, usage, strings.Join(notes, "; "))
}
