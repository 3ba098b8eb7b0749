// Package etcdcopy implements the step types etcd.copy and etcd.verify: a consistent copy of
// every key under a prefix from one etcd datastore to another, at one pinned revision, and its
// verification by count and sha256.
//
// etcd.copy takes the source's current revision when it starts and reads every page (≤ 1,000
// keys) at that revision, so the target receives the prefix exactly as it was at one instant,
// whatever is written to the source meanwhile. Pages are cut into transactions of ≤ 128 puts
// and ≤ 1 MiB (etcd's limits are 128 ops and 1.5 MiB a request) that several writers commit in
// parallel. The checkpoint (rc.SaveState) records the revision and the last key below which
// every transaction is committed; a resumed copy continues after that key at the same revision,
// or, if the revision was compacted meanwhile, starts again from a fresh revision and says so.
package etcdcopy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/etcd"
)

// Limits of etcd (defaults of --max-txn-ops and --max-request-bytes) and what the copy uses.
const (
	MaxPageSize       = 1000
	MaxBatchOps       = 128
	DefaultBatchBytes = 1 << 20 // well under etcd's 1.5 MiB request limit
	MaxBatchBytes     = 1400 * 1024
	DefaultParallel   = 8
	opOverhead        = 32 // bytes of a put besides its key and value, in a txn request
)

// Target policies.
const (
	PolicyRefuse    = "refuse"
	PolicyClean     = "clean"
	PolicyOverwrite = "overwrite"
)

// Lease modes.
const (
	LeasesKeep = "keep"
	LeasesDrop = "drop"
)

// Copy is etcd.copy.
type Copy struct {
	Source       string `yaml:"source" plan:"required,datastore" doc:"Name of the datastore to copy from (the plan's datastores)."`
	Target       string `yaml:"target" plan:"required,datastore" doc:"Name of the datastore to copy to."`
	Prefix       string `yaml:"prefix" plan:"required" doc:"Copy every key that starts with this prefix, e.g. /registry/."`
	TargetPrefix string `yaml:"targetPrefix" doc:"Write the keys under this prefix instead (prefix rewrite: prefix is replaced by targetPrefix); default: prefix."`
	Leases       string `yaml:"leases" doc:"keep (default): attach the keys to a target lease with the source lease's remaining TTL, one per source lease; drop: write keys without lease."`
	TargetPolicy string `yaml:"targetPolicy" doc:"When the target prefix holds keys: refuse (default: fail naming the first key), clean (delete them first), overwrite (write over them, delete nothing)."`
	PageSize     int    `yaml:"pageSize" doc:"Keys read per page (at most and by default 1000) from servers before etcd 3.7; newer servers stream the range in chunks under their request size limit."`
	BatchOps     int    `yaml:"batchOps" doc:"Puts per transaction (at most and by default 128)."`
	BatchBytes   int    `yaml:"batchBytes" doc:"Bytes of keys and values per transaction (default 1 MiB, at most 1.4 MiB)."`
	Parallel     int    `yaml:"parallel" doc:"Transactions in flight (default 8)."`
}

var (
	_ engine.Action    = (*Copy)(nil)
	_ engine.Validator = (*Copy)(nil)
	_ engine.Undoer    = (*Copy)(nil)
	_ engine.Describer = (*Copy)(nil)
)

func init() {
	engine.Register(engine.StepType{
		Name: "etcd.copy",
		Doc:  "Copy every key under a prefix from one etcd datastore to another at one pinned revision, optionally rewriting the prefix; resumable.",
		New:  func() engine.Action { return &Copy{} },
	})
	engine.Register(engine.StepType{
		Name: "etcd.verify",
		Doc:  "Compare count and sha256 of the keys under a prefix of the source (at a revision) and of the target (after prefix rewrite); fail naming the first differing keys.",
		New:  func() engine.Action { return &Verify{} },
	})
}

func (c *Copy) targetPrefix() string {
	if c.TargetPrefix == "" {
		return c.Prefix
	}
	return c.TargetPrefix
}

// Validate checks the options.
func (c *Copy) Validate() error {
	if c.Prefix == "" {
		return errors.New("prefix: must not be empty")
	}
	switch c.Leases {
	case "", LeasesKeep, LeasesDrop:
	default:
		return fmt.Errorf("leases: %q is not keep or drop", c.Leases)
	}
	switch c.TargetPolicy {
	case "", PolicyRefuse, PolicyClean, PolicyOverwrite:
	default:
		return fmt.Errorf("targetPolicy: %q is not refuse, clean or overwrite", c.TargetPolicy)
	}
	if c.PageSize < 0 || c.PageSize > MaxPageSize {
		return fmt.Errorf("pageSize: %d is not between 1 and %d", c.PageSize, MaxPageSize)
	}
	if c.BatchOps < 0 || c.BatchOps > MaxBatchOps {
		return fmt.Errorf("batchOps: %d is not between 1 and %d", c.BatchOps, MaxBatchOps)
	}
	if c.BatchBytes < 0 || c.BatchBytes > MaxBatchBytes {
		return fmt.Errorf("batchBytes: %d is not between 1 and %d", c.BatchBytes, MaxBatchBytes)
	}
	if c.Parallel < 0 || c.Parallel > 64 {
		return fmt.Errorf("parallel: %d is not between 1 and 64", c.Parallel)
	}
	if c.Source == c.Target && (strings.HasPrefix(c.Prefix, c.targetPrefix()) || strings.HasPrefix(c.targetPrefix(), c.Prefix)) {
		return fmt.Errorf("targetPrefix: %q overlaps prefix %q on the same datastore %q", c.targetPrefix(), c.Prefix, c.Source)
	}
	return nil
}

func (c *Copy) policy() string { return cmp.Or(c.TargetPolicy, PolicyRefuse) }
func (c *Copy) leases() string { return cmp.Or(c.Leases, LeasesKeep) }

// Describe says what the step does in one line.
func (c *Copy) Describe() string {
	to := c.Target
	if c.targetPrefix() != c.Prefix {
		to += " " + c.targetPrefix()
	}
	return fmt.Sprintf("copy etcd keys %s from %s to %s (leases %s, target %s)", c.Prefix, c.Source, to, c.leases(), c.policy())
}

// state is the checkpoint of a copy.
type state struct {
	Revision int64 `json:"revision"`
	// LastKey is the last source key such that it and every key before it are committed on the
	// target ("" before the first commit).
	LastKey string `json:"lastKey"`
	Keys    int64  `json:"keys"`
	Bytes   int64  `json:"bytes"`
	// LeaseMap maps source lease ids to the target leases granted for them.
	LeaseMap  map[int64]int64 `json:"leaseMap,omitempty"`
	Restarted bool            `json:"restarted,omitempty"`
}

// Run copies.
func (c *Copy) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	src, sds, err := etcd.Connect(ctx, rc, c.Source)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	dst, dds, err := etcd.Connect(ctx, rc, c.Target)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	cp := &copier{Copy: c, rc: rc, src: src, dst: dst, sds: sds, dds: dds, log: logger(rc)}
	if rc.DryRun {
		return cp.dryRun(ctx)
	}
	var st state
	resumed, err := rc.LoadState(&st)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	restarted := st.Restarted
	if !resumed {
		if err := cp.prepareTarget(ctx); err != nil {
			return nil, err
		}
		if st, err = cp.fresh(ctx); err != nil {
			return nil, err
		}
		if err := rc.SaveState(ctx, st); err != nil {
			return nil, err
		}
	} else {
		cp.log.Info("resuming etcd copy", "revision", st.Revision, "after", st.LastKey, "keys", st.Keys)
	}
	for attempt := 0; ; attempt++ {
		total, err := cp.count(ctx, st.Revision)
		if err == nil {
			cp.total = total
			err = cp.copy(ctx, &st)
		}
		if err == nil {
			break
		}
		if !etcd.IsCompacted(err) || attempt >= 3 {
			return nil, err
		}
		// The pinned revision is gone: the first attempt's keys may be a mixture of two states,
		// so start again on a clean target (never deleting under overwrite) at a fresh revision.
		old := st.Revision
		if c.policy() != PolicyOverwrite {
			if err := cp.deleteTarget(ctx); err != nil {
				return nil, err
			}
		}
		if st, err = cp.fresh(ctx); err != nil {
			return nil, err
		}
		st.Restarted, restarted = true, true
		cp.log.Warn("etcd copy: the pinned revision was compacted on the source; restarting from a fresh revision",
			"compactedRevision", old, "revision", st.Revision)
		if err := rc.SaveState(ctx, st); err != nil {
			return nil, err
		}
	}
	out := c.outputs(st.Revision)
	out["keys"], out["bytes"], out["leases"] = st.Keys, st.Bytes, int64(len(st.LeaseMap))
	out["resumed"], out["restarted"] = resumed, restarted
	return out, nil
}

func (c *Copy) outputs(rev int64) engine.Outputs {
	return engine.Outputs{
		"revision":     rev,
		"source":       c.Source,
		"target":       c.Target,
		"prefix":       c.Prefix,
		"targetPrefix": c.targetPrefix(),
		"targetPolicy": c.policy(),
		"leasesMode":   c.leases(),
	}
}

type copier struct {
	*Copy
	rc       *engine.RunContext
	src, dst *clientv3.Client
	sds, dds *etcd.Datastore
	log      interface {
		Info(string, ...any)
		Warn(string, ...any)
	}
	total int64
}

// fresh pins the source's current revision.
func (cp *copier) fresh(ctx context.Context) (state, error) {
	rctx, cancel := cp.sds.Request(ctx)
	defer cancel()
	resp, err := cp.src.Get(rctx, cp.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return state{}, cp.srcErr(err)
	}
	return state{Revision: resp.Header.Revision, LeaseMap: map[int64]int64{}}, nil
}

func (cp *copier) count(ctx context.Context, rev int64) (int64, error) {
	rctx, cancel := cp.sds.Request(ctx)
	defer cancel()
	resp, err := cp.src.Get(rctx, cp.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithRev(rev))
	if err != nil {
		return 0, cp.srcErr(fmt.Errorf("revision %d: %w", rev, err))
	}
	return resp.Count, nil
}

func (cp *copier) srcErr(err error) error {
	return cp.sds.Error(fmt.Errorf("prefix %q: %w", cp.Prefix, err))
}

func (cp *copier) dstErr(err error) error {
	return cp.dds.Error(fmt.Errorf("prefix %q: %w", cp.targetPrefix(), err))
}

// firstTargetKey returns the first key under the target prefix and how many there are.
func (cp *copier) firstTargetKey(ctx context.Context) (string, int64, error) {
	rctx, cancel := cp.dds.Request(ctx)
	defer cancel()
	resp, err := cp.dst.Get(rctx, cp.targetPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(1))
	if err != nil {
		return "", 0, cp.dstErr(err)
	}
	if len(resp.Kvs) == 0 {
		return "", 0, nil
	}
	return string(resp.Kvs[0].Key), resp.Count, nil
}

// prepareTarget applies the target policy before anything is written.
func (cp *copier) prepareTarget(ctx context.Context) error {
	switch cp.policy() {
	case PolicyRefuse:
		first, n, err := cp.firstTargetKey(ctx)
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("target datastore %q is not empty under %q: %d keys, the first %q (targetPolicy: clean or overwrite to write anyway)",
				cp.Target, cp.targetPrefix(), n, first)
		}
	case PolicyClean:
		return cp.deleteTarget(ctx)
	}
	return nil
}

func (cp *copier) deleteTarget(ctx context.Context) error {
	rctx, cancel := cp.dds.Request(ctx)
	defer cancel()
	resp, err := cp.dst.Delete(rctx, cp.targetPrefix(), clientv3.WithPrefix())
	if err != nil {
		return cp.dstErr(fmt.Errorf("deleting: %w", err))
	}
	if resp.Deleted > 0 {
		cp.log.Info("etcd copy: deleted the target prefix", "datastore", cp.Target, "prefix", cp.targetPrefix(), "keys", resp.Deleted)
	}
	return nil
}

func (cp *copier) dryRun(ctx context.Context) (engine.Outputs, error) {
	st, err := cp.fresh(ctx)
	if err != nil {
		return nil, err
	}
	n, err := cp.count(ctx, st.Revision)
	if err != nil {
		return nil, err
	}
	first, existing, err := cp.firstTargetKey(ctx)
	if err != nil {
		return nil, err
	}
	out := cp.outputs(st.Revision)
	out["dryRun"], out["keys"], out["existingTargetKeys"] = true, n, existing
	switch {
	case existing > 0 && cp.policy() == PolicyRefuse:
		return nil, fmt.Errorf("target datastore %q is not empty under %q: %d keys, the first %q (targetPolicy: clean or overwrite to write anyway)",
			cp.Target, cp.targetPrefix(), existing, first)
	case existing > 0 && cp.policy() == PolicyClean:
		out["wouldDelete"] = existing
	}
	return out, nil
}

// batch is one transaction: puts of consecutive source keys.
type batch struct {
	seq     int64
	ops     []clientv3.Op
	lastKey string
	keys    int64
	bytes   int64
}

// copy copies the keys after st.LastKey at st.Revision, advancing st as transactions commit.
func (cp *copier) copy(ctx context.Context, st *state) error {
	if st.LeaseMap == nil {
		st.LeaseMap = map[int64]int64{}
	}
	if err := cp.checkLeases(ctx, st); err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	parallel := cp.Parallel
	if parallel == 0 {
		parallel = DefaultParallel
	}
	batches := make(chan *batch, parallel*2)
	done := make(chan *batch, parallel*2)

	var mu sync.Mutex // guards st.LeaseMap (reader) against checkpoints (tracker)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(batches)
		if err := cp.read(ctx, st, &mu, batches); err != nil {
			cancel(err)
		}
	}()
	var writers sync.WaitGroup
	for range parallel {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for b := range batches {
				if ctx.Err() != nil {
					continue
				}
				if err := cp.write(ctx, b); err != nil {
					cancel(err)
					continue
				}
				done <- b
			}
		}()
	}
	go func() { writers.Wait(); close(done) }()

	// The tracker advances the checkpoint only over a contiguous run of committed batches.
	pending := map[int64]*batch{}
	next := int64(0)
	lastSave := time.Now()
	save := func() error {
		mu.Lock()
		defer mu.Unlock()
		return cp.rc.SaveState(context.WithoutCancel(ctx), st)
	}
	var saveErr error
	for b := range done {
		pending[b.seq] = b
		advanced := false
		for {
			nb, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			next++
			st.LastKey = nb.lastKey
			st.Keys += nb.keys
			st.Bytes += nb.bytes
			advanced = true
		}
		if advanced {
			cp.rc.Progress(engine.Progress{Done: st.Keys, Total: cp.total, Bytes: st.Bytes, Unit: "keys"})
			if time.Since(lastSave) > time.Second && saveErr == nil {
				saveErr = save()
				lastSave = time.Now()
			}
		}
	}
	wg.Wait()
	// Save whatever is committed, even when failing, so a resume continues from there.
	if err := save(); err != nil && saveErr == nil {
		saveErr = err
	}
	if err := context.Cause(ctx); err != nil {
		return err
	}
	if saveErr != nil {
		return saveErr
	}
	return nil
}

// read streams the source at the pinned revision (etcd.Datastore.Scan) and cuts what it reads
// into batches, in key order.
func (cp *copier) read(ctx context.Context, st *state, mu *sync.Mutex, out chan<- *batch) error {
	pageSize := int64(cp.PageSize)
	if pageSize == 0 {
		pageSize = MaxPageSize
	}
	bt := &batcher{cp: cp, st: st, mu: mu, out: out, cur: &batch{}, maxOps: cp.BatchOps, maxBytes: int64(cp.BatchBytes)}
	if bt.maxOps == 0 {
		bt.maxOps = MaxBatchOps
	}
	if bt.maxBytes == 0 {
		bt.maxBytes = DefaultBatchBytes
	}
	start := cp.Prefix
	if st.LastKey != "" {
		start = st.LastKey + "\x00"
	}
	var cutErr error // from cutting batches (a lease grant, a stopped run), not from reading
	err := cp.sds.Scan(ctx, cp.src, start, clientv3.GetPrefixRangeEnd(cp.Prefix), st.Revision, pageSize, func(kvs []*mvccpb.KeyValue) error {
		for _, kv := range kvs {
			if cutErr = bt.add(ctx, kv); cutErr != nil {
				return cutErr
			}
		}
		return nil
	})
	switch {
	case cutErr != nil:
		return cutErr
	case err != nil && ctx.Err() != nil:
		return context.Cause(ctx)
	case err != nil:
		return cp.srcErr(fmt.Errorf("reading at revision %d from %q: %w", st.Revision, start, err))
	}
	return bt.flush(ctx)
}

// batcher cuts key-values into write batches within etcd's limits (ops and bytes a request).
type batcher struct {
	cp       *copier
	st       *state
	mu       *sync.Mutex
	out      chan<- *batch
	cur      *batch
	seq      int64
	maxOps   int
	maxBytes int64
}

func (bt *batcher) add(ctx context.Context, kv *mvccpb.KeyValue) error {
	cp := bt.cp
	key := cp.targetPrefix() + string(kv.Key[len(cp.Prefix):])
	size := int64(len(key) + len(kv.Value))
	cur := bt.cur
	if len(cur.ops) >= bt.maxOps || len(cur.ops) > 0 && cur.bytes+int64(opOverhead*len(cur.ops))+size+opOverhead > bt.maxBytes {
		if err := bt.flush(ctx); err != nil {
			return err
		}
		cur = bt.cur
	}
	var opts []clientv3.OpOption
	if kv.Lease != 0 && cp.leases() == LeasesKeep {
		id, err := cp.lease(ctx, bt.st, bt.mu, kv.Lease, string(kv.Key))
		if err != nil {
			return err
		}
		opts = append(opts, clientv3.WithLease(clientv3.LeaseID(id)))
	}
	cur.ops = append(cur.ops, clientv3.OpPut(key, string(kv.Value), opts...))
	cur.lastKey = string(kv.Key)
	cur.keys++
	cur.bytes += size
	return nil
}

// flush hands the current batch to the writers.
func (bt *batcher) flush(ctx context.Context) error {
	if len(bt.cur.ops) == 0 {
		return nil
	}
	bt.cur.seq = bt.seq
	bt.seq++
	select {
	case bt.out <- bt.cur:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	bt.cur = &batch{}
	return nil
}

// lease returns the target lease standing for a source lease, granting it with the source
// lease's remaining TTL on first use.
func (cp *copier) lease(ctx context.Context, st *state, mu *sync.Mutex, src int64, key string) (int64, error) {
	mu.Lock()
	id, ok := st.LeaseMap[src]
	mu.Unlock()
	if ok {
		return id, nil
	}
	rctx, cancel := cp.sds.Request(ctx)
	ttl, err := cp.src.TimeToLive(rctx, clientv3.LeaseID(src))
	cancel()
	if err != nil {
		return 0, cp.sds.Error(fmt.Errorf("key %q: lease %x: %w", key, src, err))
	}
	remaining := ttl.TTL
	if remaining <= 0 {
		// The lease expired after the pinned revision: the key exists at that revision, so
		// copy it with the shortest lease; it goes away on the target as it did on the source.
		remaining = 1
	}
	rctx, cancel = cp.dds.Request(ctx)
	g, err := cp.dst.Grant(rctx, remaining)
	cancel()
	if err != nil {
		return 0, cp.dds.Error(fmt.Errorf("key %q: granting a lease of %ds: %w", key, remaining, err))
	}
	mu.Lock()
	st.LeaseMap[src] = int64(g.ID)
	mu.Unlock()
	return int64(g.ID), nil
}

// checkLeases forgets target leases of a previous attempt that have expired, so they are
// granted again.
func (cp *copier) checkLeases(ctx context.Context, st *state) error {
	for src, id := range st.LeaseMap {
		rctx, cancel := cp.dds.Request(ctx)
		ttl, err := cp.dst.TimeToLive(rctx, clientv3.LeaseID(id))
		cancel()
		if err != nil {
			return cp.dds.Error(fmt.Errorf("lease %x: %w", id, err))
		}
		if ttl.TTL <= 0 {
			delete(st.LeaseMap, src)
		}
	}
	return nil
}

func (cp *copier) write(ctx context.Context, b *batch) error {
	var err error
	for try := 0; try < 5; try++ {
		rctx, cancel := cp.dds.Request(ctx)
		_, err = cp.dst.Txn(rctx).Then(b.ops...).Commit()
		cancel()
		if err == nil || ctx.Err() != nil || !engine.IsTransient(etcd.Classify(err)) {
			break
		}
		time.Sleep(time.Duration(try+1) * 200 * time.Millisecond)
	}
	if err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		first := string(b.ops[0].KeyBytes())
		return cp.dds.Error(fmt.Errorf("writing %d keys from %q: %w", len(b.ops), first, err))
	}
	return nil
}

// Undo deletes what the copy wrote: everything under the target prefix, which was empty (or
// emptied) before the copy. It does nothing after an overwrite copy, which wrote over keys it
// cannot tell from its own.
func (c *Copy) Undo(ctx context.Context, rc *engine.RunContext, outputs engine.Outputs) error {
	if outputs["dryRun"] == true {
		return nil
	}
	policy, _ := outputs["targetPolicy"].(string)
	if policy == PolicyOverwrite || policy == "" {
		logger(rc).Info("etcd.copy undo: the copy overwrote the target; leaving it as it is", "target", c.Target)
		return nil
	}
	dst, dds, err := etcd.Connect(ctx, rc, c.Target)
	if err != nil {
		return err
	}
	tp, _ := outputs["targetPrefix"].(string)
	if tp == "" {
		tp = c.targetPrefix()
	}
	rctx, cancel := dds.Request(ctx)
	defer cancel()
	if _, err := dst.Delete(rctx, tp, clientv3.WithPrefix()); err != nil {
		return dds.Error(fmt.Errorf("prefix %q: deleting: %w", tp, err))
	}
	return nil
}

type nopLogger struct{}

func (nopLogger) Info(string, ...any) {}
func (nopLogger) Warn(string, ...any) {}

func logger(rc *engine.RunContext) interface {
	Info(string, ...any)
	Warn(string, ...any)
} {
	if rc.Logger == nil {
		return nopLogger{}
	}
	return rc.Logger
}
