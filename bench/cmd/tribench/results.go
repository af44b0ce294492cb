package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// RunInfo describes one tribench run whose results are in results.json.
type RunInfo struct {
	ID       string
	Started  time.Time
	Ended    time.Time
	Mode     string // "full" or "quick"
	Only     string // --only, empty for every workload
	Reps     int
	RepsFor  string
	Skipped  []string // repetitions left out (by --deadline, or noted after a failed run)
	Commit   string   // `tributary version` of the binary under test
	Sizes    string
	Kafka    string
	Debezium string
	Load     string // load average when the run started
	Machine  string // CPU model, cores and memory of the machine it ran on
	// GoMaxProcs is the GOMAXPROCS the tributary processes ran with; 0
	// (and runs before it was recorded) is the Go runtime's default.
	GoMaxProcs int `json:",omitempty"`
}

// resultSet is docs/bench/results.json: every result the report is made of.
// A run replaces the results of the workloads it ran and keeps the others,
// so `--only X` never erases another workload's figures.
type resultSet struct {
	Runs    []*RunInfo
	Results []*Result
}

func (b *Bench) resultsPath() string {
	return filepath.Join(filepath.Dir(b.outPath()), "bench", "results.json")
}

func (b *Bench) outPath() string {
	if filepath.IsAbs(b.cfg.Out) {
		return b.cfg.Out
	}
	return filepath.Join(b.root, b.cfg.Out)
}

func loadResults(path string) (*resultSet, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &resultSet{}, nil
	}
	if err != nil {
		return nil, err
	}
	var rs resultSet
	if err := json.Unmarshal(data, &rs); err != nil {
		return nil, fmt.Errorf("%s: %w (move it away to start a new result set)", path, err)
	}
	return &rs, nil
}

func (b *Bench) runInfo() *RunInfo {
	mode := "full"
	if b.cfg.Quick {
		mode = "quick"
	}
	dbz := "io.debezium:debezium-server-dist:" + b.cfg.DbzVersion
	if b.dbzJavaV != "" {
		dbz += " on " + b.dbzJavaV
	}
	if b.dbzErr != "" {
		dbz += "; not run: " + b.dbzErr
	}
	c := b.cfg
	return &RunInfo{ID: b.runID, Started: b.started, Ended: b.ended, Mode: mode, Only: c.Only, Reps: c.Reps, RepsFor: c.RepsFor, Skipped: b.skipped,
		Commit: cmdOut(b.bin, "version"), Kafka: b.kafka.Kind, Debezium: dbz, Load: b.load0, Machine: machineSummary(), GoMaxProcs: c.GoMaxProcs,
		Sizes: fmt.Sprintf("backlogs of %s single-row transactions; one transaction of %s rows; snapshot of %s rows; "+
			"mixed backlog of %s transactions; pgbench backlog of %s transactions; %s wide rows; DuckDB backlog of %s row changes; "+
			"latency %d s at %s (tx/s x rows); pgbench %d s per source-TPS run",
			fmtNum(float64(c.N), 0), fmtNum(float64(c.BigRows), 0), fmtNum(float64(c.SnapRows), 0), fmtNum(float64(c.MixN), 0),
			fmtNum(float64(c.PgbenchTx), 0), fmtNum(float64(c.ToastRows), 0), fmtNum(float64(c.DuckRows), 0), c.LatSecs, c.LatRates, c.TPSSecs)}
}

// merged is the previous result set minus the workloads this run selected,
// plus this run's results for them, and the runs that any result refers to.
func (b *Bench) merged() *resultSet {
	out := &resultSet{}
	for _, r := range b.prev.Results {
		if !b.want(selector(r.Workload)) {
			out.Results = append(out.Results, r)
		}
	}
	for _, r := range b.results {
		if b.want(selector(r.Workload)) {
			out.Results = append(out.Results, r)
		}
	}
	used := map[string]bool{}
	for _, r := range out.Results {
		used[r.Run] = true
	}
	for _, ri := range b.prev.Runs {
		if used[ri.ID] && ri.ID != b.runID {
			out.Runs = append(out.Runs, ri)
		}
	}
	out.Runs = append(out.Runs, b.runInfo())
	slices.SortStableFunc(out.Results, func(x, y *Result) int { return workloadOrder(x.Workload) - workloadOrder(y.Workload) })
	return out
}

func (rs *resultSet) save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(rs, "", " ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (rs *resultSet) run(id string) *RunInfo {
	for _, r := range rs.Runs {
		if r.ID == id {
			return r
		}
	}
	return &RunInfo{ID: id, Commit: "unknown"}
}

// workloadOrder is the report's section order.
func workloadOrder(w string) int {
	order := []string{wDrain, wBigTx, wE2EInsert, wE2EUpdate, wLatency, wSnapshot, wMix, wPgbench, wToastInsert, wToastUpdate, wSinks, wDuck, wTPS}
	for i, o := range order {
		if w == o || (o == wLatency && strings.HasPrefix(w, wLatency)) {
			return i
		}
	}
	return len(order)
}
