package flagconf_test

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/tributary-cdc/tributary/cmd/tributary/internal/flagconf"
)

func Example() {
	fs := flagconf.New("tributary capture", os.Stdout, flagconf.Info{
		Description: "Stream changes from PostgreSQL into Kafka.",
		Examples:    "tributary capture --source postgres://db/app --brokers k1:9092,k2:9092",
	})
	source := fs.String("source", "", "PostgreSQL connection `dsn`")
	brokers := fs.StringList("brokers", []string{"localhost:9092"}, "Kafka seed `host:port` list")
	flush := fs.Duration("flush-interval", time.Second, "how often to flush to Kafka")
	password := fs.Secret("password", "the PostgreSQL password")
	fs.Require("source")

	env := map[string]string{"TRIBUTARY_PASSWORD": "s3cret", "TRIBUTARY_FLUSH_INTERVAL": "5s"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok } // os.LookupEnv in main
	err := fs.Parse([]string{"--source", "postgres://db/app"}, lookup)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return // exit 0
	case err != nil:
		fmt.Printf("tributary capture: %v\n", err) // to stderr, then exit 2
		return
	}
	fmt.Println(*source, *brokers, *flush, len(*password))
	for _, st := range fs.Settings() {
		fmt.Printf("%s=%s (%s)\n", st.Name, st.Value, st.Origin)
	}
	// Output:
	// postgres://db/app [localhost:9092] 5s 6
	// config= (default)
	// source=postgres://db/app (--source)
	// brokers=localhost:9092 (default)
	// flush-interval=5s (TRIBUTARY_FLUSH_INTERVAL)
	// password=<redacted> (TRIBUTARY_PASSWORD)
	// password-file= (default)
}

func ExampleSet_PrintUsage() {
	fs := flagconf.New("tributary capture", os.Stdout, flagconf.Info{
		Description: "Stream changes from PostgreSQL into Kafka.",
		Examples:    "tributary capture --source postgres://db/app --brokers k1:9092,k2:9092",
	})
	fs.String("source", "", "PostgreSQL connection `dsn`")
	fs.StringList("brokers", []string{"localhost:9092"}, "Kafka seed `host:port` list")
	fs.Int("partitions", 1, "partitions of new topics")
	fs.Secret("password", "the PostgreSQL password")
	fs.Require("source")
	err := fs.Parse([]string{"--help"}, nil)
	fmt.Println(err == flag.ErrHelp)
	// Output:
	// Usage: tributary capture [flags]
	//
	// Stream changes from PostgreSQL into Kafka.
	//
	// Flags:
	//   --source dsn
	//         PostgreSQL connection dsn (required; env TRIBUTARY_SOURCE)
	//   --brokers host:port
	//         Kafka seed host:port list (default "localhost:9092"; env TRIBUTARY_BROKERS)
	//   --partitions int
	//         partitions of new topics (default 1; env TRIBUTARY_PARTITIONS)
	//   --password-file path
	//         path of a file holding the PostgreSQL password; or set TRIBUTARY_PASSWORD instead (this secret is never accepted as a plain flag) (env TRIBUTARY_PASSWORD_FILE)
	//   --config file
	//         YAML config file; its keys are the flag names (env TRIBUTARY_CONFIG)
	//   -h, --help
	//         show this help
	//
	// Every flag --some-name can also be set as the environment variable TRIBUTARY_SOME_NAME
	// or as the key "some-name" in the --config file. Precedence: command-line flag >
	// environment variable > config file > default.
	//
	// Examples:
	//   tributary capture --source postgres://db/app --brokers k1:9092,k2:9092
	// true
}
