package harness

// A three-broker Kafka cluster whose nodes a test kills and restarts.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tributary-cdc/tributary/deploy/embedded"
)

// Cluster is a Kafka cluster of three brokers, with replication factor 3 and
// min.insync.replicas 2, whose nodes a test kills with SIGKILL and restarts.
// Its Kafka (Brokers lists every node; RegistryURL is an in-process srfake
// registry) serves ReadLog and the other helpers as a single broker does.
//
// Which brokers it runs is decided by StartCluster: real Apache Kafka, or
// three in-process kfake brokers whose node deaths are emulated (see Kill).
// Its methods are called from the test goroutine, one at a time.
type Cluster struct {
	*Kafka
	Nodes []int32 // node IDs, ascending

	dir string // real: the deploy/local/kafka.sh DIR

	fake *kfake.Cluster // kfake: the brokers
	lns  []*nodeListener
	down map[int32]bool

	cl *kgo.Client // the cluster's own requests; seeded with every node
}

// StartCluster starts a three-broker cluster that is stopped when the test
// ends. With TRIBUTARY_TEST_KAFKA_DIR set to a directory holding fetched
// Kafka jars in lib/ (deploy/local/kafka.sh fetch DIR; the real-Kafka lane
// sets it), it is real Apache Kafka: `KAFKA_NODES=3 deploy/local/kafka.sh
// start` into a temporary directory, each node a KRaft broker and
// controller. Without it, and when TRIBUTARY_TEST_BROKERS is unset too (the
// embedded lane), it is three kfake brokers in this process. The real-Kafka
// lane without the jars fails the test: it never falls back to kfake.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	jars := os.Getenv("TRIBUTARY_TEST_KAFKA_DIR")
	switch {
	case jars != "":
		return startRealCluster(t, jars)
	case os.Getenv("TRIBUTARY_TEST_BROKERS") != "":
		t.Fatal("the real-Kafka lane (TRIBUTARY_TEST_BROKERS set) needs TRIBUTARY_TEST_KAFKA_DIR, a directory with the " +
			"Kafka jars in lib/ (deploy/local/kafka.sh fetch DIR), to start its three-broker cluster")
		return nil
	default:
		return startFakeCluster(t)
	}
}

// startRegistry is an in-process srfake registry for a cluster's events.
func startRegistry(t testing.TB) string {
	t.Helper()
	st, err := embedded.Start(embedded.Config{})
	if err != nil {
		t.Fatalf("embedded registry: %v", err)
	}
	st.Cluster.Close() // only the registry of the stack is used
	t.Cleanup(func() { st.Close() })
	return st.RegistryURL
}

func startRealCluster(t testing.TB, jars string) *Cluster {
	t.Helper()
	lib := filepath.Join(jars, "lib")
	if _, err := os.Stat(filepath.Join(lib, ".complete")); err != nil {
		t.Fatalf("TRIBUTARY_TEST_KAFKA_DIR=%s holds no fetched Kafka jars (%v): run deploy/local/kafka.sh fetch %s", jars, err, jars)
	}
	dir, err := os.MkdirTemp("", "trib-kafka3-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(lib, filepath.Join(dir, "lib")); err != nil {
		t.Fatal(err)
	}
	c := &Cluster{dir: dir}
	t.Cleanup(func() {
		if out, err := c.script(nil, "stop"); err != nil {
			t.Logf("stop the Kafka cluster: %v\n%s", err, out)
		}
		if t.Failed() {
			for _, id := range c.Nodes {
				t.Logf("node %d, last lines of its log:\n%s", id, tailFile(c.nodeLog(id), 30))
			}
			t.Logf("the cluster's logs and data are kept in %s", filepath.Join(dir, "run"))
			return
		}
		os.RemoveAll(dir)
	})
	if out, err := c.script([]string{"KAFKA_NODES=3"}, "start"); err != nil {
		t.Fatalf("start a three-node Kafka cluster: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "run", "bootstrap"))
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := os.ReadFile(filepath.Join(dir, "run", "nodes"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(nodes)), "\n") {
		id, err := strconv.Atoi(strings.Fields(line)[0])
		if err != nil {
			t.Fatalf("%s/run/nodes: %q: %v", dir, line, err)
		}
		c.Nodes = append(c.Nodes, int32(id))
	}
	c.Kafka = &Kafka{Brokers: strings.Split(strings.TrimSpace(string(b)), ","), RegistryURL: startRegistry(t), Real: true}
	c.cl = c.Client(t, kgo.RetryTimeout(10*time.Second))
	return c
}

// script runs deploy/local/kafka.sh VERB DIR args... with env added.
func (c *Cluster) script(env []string, verb string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(RepoRoot(), "deploy", "local", "kafka.sh"), append([]string{verb, c.dir}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	return cmd.CombinedOutput()
}

func (c *Cluster) nodeLog(id int32) string {
	return filepath.Join(c.dir, "run", fmt.Sprintf("node%d", id), "kafka.log")
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// startFakeCluster starts three kfake brokers, each behind a nodeListener
// through which Kill cuts it off.
func startFakeCluster(t testing.TB) *Cluster {
	t.Helper()
	c := &Cluster{down: map[int32]bool{}}
	// kfake calls the listen function once per broker, for node 0, 1, 2 in turn.
	listen := func(network, address string) (net.Listener, error) {
		ln, err := net.Listen(network, address)
		if err != nil {
			return nil, err
		}
		nl := &nodeListener{Listener: ln, conns: map[*nodeConn]struct{}{}}
		c.lns = append(c.lns, nl)
		return nl, nil
	}
	fake, err := kfake.NewCluster(
		kfake.NumBrokers(3),
		kfake.ListenFn(listen),
		kfake.ClusterID("tributary-cluster"),
		kfake.DefaultNumPartitions(3),
		kfake.BrokerConfigs(map[string]string{
			"transaction.max.timeout.ms": strconv.Itoa(int((30 * time.Minute).Milliseconds())),
			"default.replication.factor": "3",
			"min.insync.replicas":        "2",
		}),
	)
	if err != nil {
		t.Fatalf("start three kfake brokers: %v", err)
	}
	t.Cleanup(fake.Close)
	c.fake = fake
	for i := range c.lns {
		c.Nodes = append(c.Nodes, int32(i))
	}
	c.Kafka = &Kafka{Brokers: fake.ListenAddrs(), RegistryURL: startRegistry(t)}
	c.cl = c.Client(t, kgo.RetryTimeout(10*time.Second))
	return c
}

// Kill kills node like SIGKILL: its connections end and it accepts no more
// until Restart.
//
// On real Kafka it is `deploy/local/kafka.sh kill-node`, which returns once
// the process is gone; the controller quorum fences the node after
// broker.session.timeout.ms and moves its leaderships and coordinators to
// the replicas in sync.
//
// On kfake, which keeps one copy of all data for every broker, a death is
// emulated: the node's open connections are reset, and so is every new one
// as it is accepted; then, as the controller does once it fences a node,
// each partition the node led gets a live replica as its leader, and
// coordinators are rehashed until no transactional ID and no group (as
// listed just before the kill) is coordinated by a dead node. kfake moves
// every coordinator when it rehashes, so coordinators on live nodes may
// move too. Records a leader held but had not acknowledged cannot be lost
// here, as they can on real Kafka: kfake has no replicas to diverge.
func (c *Cluster) Kill(t testing.TB, node int32) {
	t.Helper()
	if c.fake == nil {
		if out, err := c.script(nil, "kill-node", strconv.Itoa(int(node))); err != nil {
			t.Fatalf("kill Kafka node %d: %v\n%s", node, err, out)
		}
		return
	}
	ln := c.nodeListener(t, node)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	adm := kadm.NewClient(c.cl)
	// The coordinator keys, while every node answers: kfake lists a group
	// only on its coordinator, and transactional IDs on every node.
	var keys []string
	err := retryCtx(ctx, func() error {
		keys = keys[:0]
		groups, err := adm.ListGroups(ctx)
		if err != nil {
			return err
		}
		keys = append(keys, groups.Groups()...)
		resp, err := kmsg.NewPtrListTransactionsRequest().RequestWith(ctx, c.cl)
		if err != nil {
			return err
		}
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			return err
		}
		for _, s := range resp.TransactionStates {
			keys = append(keys, s.TransactionalID)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("kfake cluster: list groups and transactions before killing node %d: %v", node, err)
	}

	ln.setDown(true)
	c.down[node] = true
	live := c.liveNodes()
	if len(live) == 0 {
		t.Fatal("kfake cluster: every node is down")
	}
	var md *kmsg.MetadataResponse
	err = retryCtx(ctx, func() error {
		var err error
		md, err = c.metadata(ctx)
		return err
	})
	if err != nil {
		t.Fatalf("kfake cluster: metadata after killing node %d: %v", node, err)
	}
	for _, td := range md.Topics {
		for _, p := range td.Partitions {
			if p.Leader != node {
				continue
			}
			to := live[0]
			for _, r := range p.Replicas {
				if !c.down[r] {
					to = r
					break
				}
			}
			if err := c.fake.MoveTopicPartition(*td.Topic, p.Partition, to); err != nil {
				t.Fatalf("kfake cluster: move %s[%d] to node %d: %v", *td.Topic, p.Partition, to, err)
			}
		}
	}
	for i := 0; ; i++ {
		onDead := ""
		for _, k := range keys {
			if c.down[c.fake.CoordinatorFor(k)] {
				onDead = k
			}
		}
		if onDead == "" {
			return
		}
		if i == 1000 {
			t.Fatalf("kfake cluster: %q is still coordinated by a dead node after %d rehashes", onDead, i)
		}
		c.fake.RehashCoordinators()
	}
}

// Restart starts a killed node again with its own properties and data, and
// returns once it serves. Leadership stays where the failover put it, as
// with Apache Kafka until its periodic preferred-leader election (5 min by
// default), which a test should not wait for.
func (c *Cluster) Restart(t testing.TB, node int32) {
	t.Helper()
	if c.fake == nil {
		if out, err := c.script(nil, "start-node", strconv.Itoa(int(node))); err != nil {
			t.Fatalf("restart Kafka node %d: %v\n%s", node, err, out)
		}
		return
	}
	c.nodeListener(t, node).setDown(false)
	delete(c.down, node)
}

// Leader returns the node that leads topic's partition, as the cluster's
// metadata says (a dead leader until the failover). It waits, up to a
// minute, while the partition is unknown or has no leader.
func (c *Cluster) Leader(t testing.TB, topic string, partition int32) int32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var leader int32 = -1
	err := retryCtx(ctx, func() error {
		md, err := c.metadata(ctx, topic)
		if err != nil {
			return err
		}
		for _, td := range md.Topics {
			if err := kerr.ErrorForCode(td.ErrorCode); err != nil {
				return err
			}
			for _, p := range td.Partitions {
				if p.Partition != partition {
					continue
				}
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					return err
				}
				if p.Leader < 0 {
					return errors.New("no leader")
				}
				leader = p.Leader
				return nil
			}
		}
		return fmt.Errorf("no partition %d", partition)
	})
	if err != nil {
		t.Fatalf("leader of %s[%d]: %v", topic, partition, err)
	}
	return leader
}

// WaitReplicated waits until every node is a registered broker and every
// partition of every topic, internal ones included, has a leader and all
// its replicas in sync: a node restarted by Restart has caught up. It fails
// the test after timeout, naming the partitions that are behind.
func (c *Cluster) WaitReplicated(t testing.TB, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		lag := c.replicationLag(ctx)
		if lag == "" {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the cluster is not fully replicated after %s: %s", timeout, lag)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// replicationLag describes what keeps the cluster from being fully
// replicated, or returns "" when nothing does.
func (c *Cluster) replicationLag(ctx context.Context) string {
	md, err := c.metadata(ctx)
	if err != nil {
		return err.Error()
	}
	var brokers []int32
	for _, b := range md.Brokers {
		brokers = append(brokers, b.NodeID)
	}
	sort.Slice(brokers, func(i, j int) bool { return brokers[i] < brokers[j] })
	if fmt.Sprint(brokers) != fmt.Sprint(c.Nodes) {
		return fmt.Sprintf("brokers %v registered, want %v", brokers, c.Nodes)
	}
	var behind []string
	for _, td := range md.Topics {
		if err := kerr.ErrorForCode(td.ErrorCode); err != nil {
			behind = append(behind, fmt.Sprintf("%s: %v", *td.Topic, err))
			continue
		}
		for _, p := range td.Partitions {
			if p.ErrorCode != 0 || p.Leader < 0 || len(p.ISR) < len(p.Replicas) {
				behind = append(behind, fmt.Sprintf("%s[%d] leader %d replicas %v isr %v (%v)",
					*td.Topic, p.Partition, p.Leader, p.Replicas, p.ISR, kerr.ErrorForCode(p.ErrorCode)))
			}
		}
	}
	sort.Strings(behind)
	if len(behind) > 5 {
		behind = append(behind[:5], fmt.Sprintf("and %d more", len(behind)-5))
	}
	return strings.Join(behind, "; ")
}

// metadata asks a node for the metadata of topics (every topic, internal
// ones included, when there are none). It never answers from the client's
// cache, which kadm does for up to MetadataMinAge: the cluster's methods
// look for leader moves.
func (c *Cluster) metadata(ctx context.Context, topics ...string) (*kmsg.MetadataResponse, error) {
	req := kmsg.NewPtrMetadataRequest()
	for _, tp := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(tp)
		req.Topics = append(req.Topics, rt)
	}
	return req.RequestWith(ctx, c.cl)
}

// TxnCoordinator returns the node that coordinates transactionalID, for
// logs; -1 when it cannot be found now.
func (c *Cluster) TxnCoordinator(t testing.TB, transactionalID string) int32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := kadm.NewClient(c.cl).FindTxnCoordinators(ctx, transactionalID)
	if resp, ok := r[transactionalID]; ok && resp.Err == nil {
		return resp.NodeID
	}
	return -1
}

// Controller returns the active controller of the KRaft quorum, for logs:
// a killed active controller adds an election to the failover. It returns
// -1 when that is unknown, and always on kfake, which has no quorum.
func (c *Cluster) Controller(t testing.TB) int32 {
	t.Helper()
	if c.fake != nil {
		return -1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := kmsg.NewPtrDescribeQuorumRequest()
	rt := kmsg.NewDescribeQuorumRequestTopic()
	rt.Topic = "__cluster_metadata"
	rp := kmsg.NewDescribeQuorumRequestTopicPartition()
	rp.Partition = 0
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, c.cl)
	if err != nil || resp.ErrorCode != 0 || len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		return -1
	}
	if p := resp.Topics[0].Partitions[0]; p.ErrorCode == 0 {
		return p.LeaderID
	}
	return -1
}

func (c *Cluster) liveNodes() []int32 {
	var live []int32
	for _, n := range c.Nodes {
		if !c.down[n] {
			live = append(live, n)
		}
	}
	return live
}

func (c *Cluster) nodeListener(t testing.TB, node int32) *nodeListener {
	t.Helper()
	if node < 0 || int(node) >= len(c.lns) {
		t.Fatalf("kfake cluster: no node %d", node)
	}
	return c.lns[node]
}

// retryCtx calls fn every 250 ms until it returns nil or ctx ends, and
// then returns fn's last error.
func retryCtx(ctx context.Context, fn func() error) error {
	for {
		err := fn()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// nodeListener is one kfake broker's listener. While down, it resets every
// connection it accepts, before kfake sees it, and Kill resets the ones
// that were open: to a client the node is gone, as after SIGKILL.
type nodeListener struct {
	net.Listener
	mu    sync.Mutex
	down  bool
	conns map[*nodeConn]struct{}
}

type nodeConn struct {
	net.Conn
	l *nodeListener
}

func (c *nodeConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

func (l *nodeListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		if l.down {
			l.mu.Unlock()
			reset(conn)
			continue
		}
		nc := &nodeConn{Conn: conn, l: l}
		l.conns[nc] = struct{}{}
		l.mu.Unlock()
		return nc, nil
	}
}

// setDown turns the node off (resetting its open connections) or on again.
func (l *nodeListener) setDown(down bool) {
	l.mu.Lock()
	l.down = down
	var open []*nodeConn
	if down {
		for c := range l.conns {
			open = append(open, c)
		}
		l.conns = map[*nodeConn]struct{}{}
	}
	l.mu.Unlock()
	for _, c := range open {
		reset(c.Conn)
	}
}
