package etcdcopy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/etcd"
)

// Verify is etcd.verify.
type Verify struct {
	Source       string `yaml:"source" plan:"required,datastore" doc:"Name of the source datastore."`
	Target       string `yaml:"target" plan:"required,datastore" doc:"Name of the target datastore."`
	Prefix       string `yaml:"prefix" plan:"required" doc:"Prefix of the keys on the source."`
	TargetPrefix string `yaml:"targetPrefix" doc:"Prefix of the same keys on the target (default: prefix)."`
	Revision     int64  `yaml:"revision" doc:"Source revision to compare, usually ${{ steps.<copy>.outputs.revision }}; default: the current revision."`
	PageSize     int    `yaml:"pageSize" doc:"Keys read per page (at most and by default 1000) from servers before etcd 3.7; newer servers stream the range in chunks under their request size limit."`
}

var (
	_ engine.Action    = (*Verify)(nil)
	_ engine.Validator = (*Verify)(nil)
	_ engine.Describer = (*Verify)(nil)
)

// maxDiffs is how many differing keys the error names.
const maxDiffs = 5

// Validate checks the options.
func (v *Verify) Validate() error {
	if v.Prefix == "" {
		return errors.New("prefix: must not be empty")
	}
	if v.Revision < 0 {
		return fmt.Errorf("revision: %d is negative", v.Revision)
	}
	if v.PageSize < 0 || v.PageSize > MaxPageSize {
		return fmt.Errorf("pageSize: %d is not between 1 and %d", v.PageSize, MaxPageSize)
	}
	return nil
}

func (v *Verify) targetPrefix() string {
	if v.TargetPrefix == "" {
		return v.Prefix
	}
	return v.TargetPrefix
}

// Describe says what the step does in one line.
func (v *Verify) Describe() string {
	rev := "current revision"
	if v.Revision > 0 {
		rev = fmt.Sprintf("revision %d", v.Revision)
	}
	return fmt.Sprintf("verify etcd keys %s of %s (%s) against %s %s", v.Prefix, v.Source, rev, v.Target, v.targetPrefix())
}

// side is one prefix of one datastore, read page by page at one revision.
type side struct {
	name   string
	cli    *clientv3.Client
	ds     *etcd.Datastore
	prefix string
	rev    int64
	page   int64

	hash  hash.Hash
	keys  int64
	bytes int64
}

// pages streams the pages of a side; the channel closes after the last page or an error.
func (s *side) pages(ctx context.Context, errc chan<- error) <-chan []*mvccpb.KeyValue {
	out := make(chan []*mvccpb.KeyValue, 2)
	go func() {
		defer close(out)
		err := s.ds.Scan(ctx, s.cli, s.prefix, clientv3.GetPrefixRangeEnd(s.prefix), s.rev, s.page, func(kvs []*mvccpb.KeyValue) error {
			select {
			case out <- kvs:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if err != nil && ctx.Err() == nil {
			errc <- s.ds.Error(fmt.Errorf("prefix %q at revision %d: %w", s.prefix, s.rev, err))
		}
	}()
	return out
}

// cursor walks the key-values of a page stream one by one.
type cursor struct {
	ch   <-chan []*mvccpb.KeyValue
	page []*mvccpb.KeyValue
	i    int
}

func (c *cursor) next() *mvccpb.KeyValue {
	for c.i >= len(c.page) {
		p, ok := <-c.ch
		if !ok {
			return nil
		}
		c.page, c.i = p, 0
	}
	kv := c.page[c.i]
	c.i++
	return kv
}

// add hashes a key (relative to the prefix, so both sides hash the same bytes) and its value,
// each length-prefixed.
func (s *side) add(rel, value []byte) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(rel)))
	s.hash.Write(n[:])
	s.hash.Write(rel)
	binary.BigEndian.PutUint64(n[:], uint64(len(value)))
	s.hash.Write(n[:])
	s.hash.Write(value)
	s.keys++
	s.bytes += int64(len(rel) + len(value))
}

// Run compares the two prefixes.
func (v *Verify) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	src, sds, err := etcd.Connect(ctx, rc, v.Source)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	dst, dds, err := etcd.Connect(ctx, rc, v.Target)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	page := int64(v.PageSize)
	if page == 0 {
		page = MaxPageSize
	}
	a := &side{name: v.Source, cli: src, ds: sds, prefix: v.Prefix, rev: v.Revision, page: page, hash: sha256.New()}
	b := &side{name: v.Target, cli: dst, ds: dds, prefix: v.targetPrefix(), page: page, hash: sha256.New()}
	// Pin both revisions first, so each side is read as of one instant.
	for _, s := range []*side{a, b} {
		if s.rev != 0 {
			continue
		}
		rctx, cancel := s.ds.Request(ctx)
		resp, err := s.cli.Get(rctx, s.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		cancel()
		if err != nil {
			return nil, s.ds.Error(fmt.Errorf("prefix %q: %w", s.prefix, err))
		}
		s.rev = resp.Header.Revision
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	ca := &cursor{ch: a.pages(ctx, errc)}
	cb := &cursor{ch: b.pages(ctx, errc)}

	var missing, extra, differ []string
	var diffs int64
	note := func(list *[]string, key string) {
		diffs++
		if len(missing)+len(extra)+len(differ) < maxDiffs {
			*list = append(*list, fmt.Sprintf("%q", key))
		}
	}
	var expiredKeys int64
	gone := map[int64]bool{}
	// leaseGone reports whether a source lease no longer exists (expired or revoked).
	leaseGone := func(id int64) (bool, error) {
		if id == 0 {
			return false, nil
		}
		if g, ok := gone[id]; ok {
			return g, nil
		}
		rctx, cancel := sds.Request(ctx)
		ttl, err := src.TimeToLive(rctx, clientv3.LeaseID(id))
		cancel()
		if err != nil {
			return false, sds.Error(fmt.Errorf("lease %x: %w", id, err))
		}
		gone[id] = ttl.TTL <= 0
		return gone[id], nil
	}
	x, y := ca.next(), cb.next()
	for x != nil || y != nil {
		var rx, ry []byte
		if x != nil {
			rx = x.Key[len(a.prefix):]
		}
		if y != nil {
			ry = y.Key[len(b.prefix):]
		}
		switch {
		case y == nil || x != nil && bytes.Compare(rx, ry) < 0:
			if expired, err := leaseGone(x.Lease); err != nil {
				return nil, err
			} else if expired {
				// Its lease ran out after the revision: gone from the source too, as on the
				// target (etcd.copy gave it the rest of the lease). Left out of both sums.
				expiredKeys++
			} else {
				a.add(rx, x.Value)
				note(&missing, string(x.Key))
			}
			x = ca.next()
		case x == nil || bytes.Compare(rx, ry) > 0:
			b.add(ry, y.Value)
			note(&extra, string(y.Key))
			y = cb.next()
		default:
			a.add(rx, x.Value)
			b.add(ry, y.Value)
			if !bytes.Equal(x.Value, y.Value) {
				note(&differ, string(x.Key))
			}
			x, y = ca.next(), cb.next()
		}
		if a.keys%1000 == 0 {
			rc.Progress(engine.Progress{Done: a.keys, Bytes: a.bytes, Unit: "keys"})
		}
	}
	select {
	case err := <-errc:
		return nil, err
	default:
	}
	sa, sb := hex.EncodeToString(a.hash.Sum(nil)), hex.EncodeToString(b.hash.Sum(nil))
	out := engine.Outputs{
		"revision": a.rev, "targetRevision": b.rev,
		"keys": a.keys, "targetKeys": b.keys, "bytes": a.bytes,
		"sha256": sa, "targetSha256": sb, "expiredKeys": expiredKeys,
		"equal": diffs == 0 && sa == sb,
	}
	if diffs > 0 || sa != sb {
		var parts []string
		for _, p := range []struct {
			what string
			keys []string
		}{{"missing on target", missing}, {"extra on target", extra}, {"value differs", differ}} {
			if len(p.keys) > 0 {
				parts = append(parts, p.what+": "+strings.Join(p.keys, ", "))
			}
		}
		more := ""
		if diffs > maxDiffs {
			more = fmt.Sprintf(" (and %d more)", diffs-maxDiffs)
		}
		return out, fmt.Errorf("%d keys differ between datastore %q prefix %q at revision %d (%d keys, sha256 %s) and datastore %q prefix %q (%d keys, sha256 %s): %s%s",
			diffs, v.Source, v.Prefix, a.rev, a.keys, sa[:12], v.Target, b.prefix, b.keys, sb[:12], strings.Join(parts, "; "), more)
	}
	return out, nil
}
