package kubebackup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube"
	"planrun.dev/planrun/steps/kube/archive"
	"planrun.dev/planrun/steps/storage"
)

// A backup reads list pages as raw JSON and copies each item to its file as the bytes arrive: no
// object is decoded into maps and encoded again (the dynamic client would do both), and at most
// one object is held in memory per list, whatever the page size or the object count.

// job is one paged list: a resource in one namespace, or across all namespaces, or cluster-scoped.
type job struct {
	target    target
	namespace string                            // list in this namespace only; "" lists all (or a cluster-scoped resource)
	keep      func(namespace, name string) bool // nil keeps every object
	keepItem  func(item []byte) bool            // nil keeps every object; else asked after keep

	files        []archive.File
	count, bytes int64 // objects, and their size before compression

	est         int64 // the list's size as progress counts it (see progress); guarded by its mu
	sizeUnknown bool  // the server did not say how much remains of the list
}

// key names the job in the step's checkpoint: its resource (in the version listed) and
// namespace. The filters that also decide what it lists come from the step's config, which the
// checkpoint's fingerprint covers.
func (j *job) key() string {
	gvr := j.target.gvr
	return gvr.Group + "/" + gvr.Version + "/" + gvr.Resource + "|" + j.namespace
}

func (j *job) where() string {
	if j.namespace != "" {
		return j.target.groupResource() + " in namespace " + j.namespace
	}
	return j.target.groupResource()
}

type listOptions struct {
	labelSelector string
	loc           storage.Location
	compression   archive.Compression
}

type lister struct{ rest rest.Interface }

func newLister(rc *engine.RunContext, c *kube.Client) (*lister, error) {
	v, err := rc.Shared("kubebackup.rest/"+c.Name, func() (any, error) {
		cfg := rest.CopyConfig(c.Config)
		cfg.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
		client, err := rest.UnversionedRESTClientFor(cfg)
		if err != nil {
			return nil, err
		}
		return client, nil
	})
	if err != nil {
		return nil, err
	}
	return &lister{rest: v.(rest.Interface)}, nil
}

// maxRestarts bounds how often one list starts over after its continue token expired.
const maxRestarts = 5

// backup runs a job's list to the end. When the continue token expires (410 Gone: the list took
// longer than the server keeps its snapshot), what the job wrote is thrown away and its list
// starts over, so that every file is one consistent snapshot.
func (l *lister) backup(ctx context.Context, j *job, opts listOptions, prog *progress) error {
	for restart := 0; ; restart++ {
		err := l.list(ctx, j, opts, prog)
		if err == nil {
			return nil
		}
		if !(apierrors.IsResourceExpired(err) || apierrors.IsGone(err)) || restart == maxRestarts {
			return err
		}
		for _, f := range j.files {
			if err := opts.loc.Remove(ctx, f.Path); err != nil {
				return fmt.Errorf("to: %w", err)
			}
		}
		prog.restart(j)
		j.files, j.count, j.bytes = nil, 0, 0
	}
}

// itemError is an error of the callback, not of the stream.
type itemError struct{ err error }

func (e *itemError) Error() string { return e.err.Error() }

func (l *lister) list(ctx context.Context, j *job, opts listOptions, prog *progress) (err error) {
	gvr := j.target.gvr
	var (
		w       *archive.Writer
		wNS     string
		closed  = map[string]bool{}
		scratch []byte
		compact bytes.Buffer
	)
	defer func() {
		if w != nil {
			// On failure nothing appears under the file's name; it is recorded so that a restart
			// removes what an earlier attempt may have left there. The manifest is not written.
			w.Abort()
			j.files = append(j.files, archive.File{Path: w.Path()})
		}
	}()
	closeWriter := func() error {
		f, err := w.Close(ctx)
		w = nil
		j.files = append(j.files, f)
		closed[wNS] = true
		if err != nil {
			return toError(f.Path, err)
		}
		return nil
	}
	apiVersion := gvr.GroupVersion().String()
	path := listPath(gvr, j.namespace)
	cont := ""
	for {
		var pageCount, pageBytes int64
		req := l.rest.Get().AbsPath(path).Param("limit", strconv.Itoa(pageSize)).SetHeader("Accept", "application/json")
		if cont != "" {
			req = req.Param("continue", cont)
		}
		if opts.labelSelector != "" {
			req = req.Param("labelSelector", opts.labelSelector)
		}
		body, err := req.Stream(ctx)
		if err != nil {
			return fmt.Errorf("list %s: %w", j.where(), kube.Classify(err))
		}
		lm, err := readList(body, func(item []byte) error {
			ns, name, hasAV, hasKind := inspect(item)
			if j.keep != nil && !j.keep(ns, name) || j.keepItem != nil && !j.keepItem(item) {
				return nil
			}
			if bytes.IndexByte(item, '\n') >= 0 {
				compact.Reset()
				if err := json.Compact(&compact, item); err != nil {
					return err
				}
				item = compact.Bytes()
			}
			if !hasAV || !hasKind {
				// Items of lists of built-in types come without apiVersion and kind; a backup
				// file holds whole objects.
				scratch = withTypeMeta(scratch[:0], item, apiVersion, j.target.kind, hasAV, hasKind)
				item = scratch
			}
			pageCount++
			pageBytes += int64(len(item)) + 1
			if !j.target.namespaced {
				ns = ""
			}
			if w == nil || ns != wNS {
				if w != nil {
					if err := closeWriter(); err != nil {
						return err
					}
				}
				if closed[ns] {
					// The API server lists in key order, so a namespace's objects are contiguous.
					return fmt.Errorf("list %s: objects of namespace %q came out of order", j.where(), ns)
				}
				if w, err = archive.Create(ctx, opts.loc, opts.compression, gvr.Group, gvr.Resource, ns); err != nil {
					return fmt.Errorf("to: %w", err)
				}
				wNS = ns
			}
			if err := w.Write(item); err != nil {
				return toError(w.Path(), err)
			}
			return nil
		})
		body.Close()
		j.count += pageCount
		j.bytes += pageBytes
		prog.page(j, pageCount, pageBytes, lm.RemainingItemCount, err == nil && lm.Continue == "")
		if err != nil {
			var ie *itemError
			if errors.As(err, &ie) {
				return ie.err
			}
			// The connection dropped in the middle of a page: worth another attempt.
			return engine.Transient(fmt.Errorf("list %s: reading the response: %w", j.where(), err))
		}
		if lm.Continue == "" {
			break
		}
		cont = lm.Continue
	}
	if w != nil {
		return closeWriter()
	}
	return nil
}

// toError names the file of the backup a write failed on, unless the location's error does
// (a *storage.Error names the location and the path).
func toError(path string, err error) error {
	var se *storage.Error
	if errors.As(err, &se) {
		return fmt.Errorf("to: %w", err)
	}
	return fmt.Errorf("to: %s: %w", path, err)
}

func listPath(gvr schema.GroupVersionResource, ns string) string {
	p := "/apis/" + gvr.Group + "/" + gvr.Version
	if gvr.Group == "" {
		p = "/api/" + gvr.Version
	}
	if ns != "" {
		p += "/namespaces/" + ns
	}
	return p + "/" + gvr.Resource
}

type listMeta struct {
	Continue           string `json:"continue"`
	RemainingItemCount *int64 `json:"remainingItemCount"`
}

// readList streams a list response, calling fn with the JSON of each item (valid during the call).
func readList(r io.Reader, fn func(item []byte) error) (listMeta, error) {
	var lm listMeta
	dec := json.NewDecoder(r)
	if err := expectDelim(dec, '{'); err != nil {
		return lm, err
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return lm, err
		}
		switch tok {
		case "metadata":
			if err := dec.Decode(&lm); err != nil {
				return lm, err
			}
		case "items":
			tok, err := dec.Token()
			if err != nil {
				return lm, err
			}
			if tok == nil { // "items": null
				continue
			}
			if d, ok := tok.(json.Delim); !ok || d != '[' {
				return lm, fmt.Errorf("items: unexpected %v", tok)
			}
			var raw json.RawMessage
			for dec.More() {
				raw = raw[:0]
				if err := dec.Decode(&raw); err != nil {
					return lm, err
				}
				if err := fn(raw); err != nil {
					return lm, &itemError{err}
				}
			}
			if err := expectDelim(dec, ']'); err != nil {
				return lm, err
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return lm, err
			}
		}
	}
	return lm, expectDelim(dec, '}')
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("unexpected %v, want %v", tok, want)
	}
	return nil
}

// withTypeMeta appends obj to dst with the apiVersion and kind it lacks added at the front.
func withTypeMeta(dst, obj []byte, apiVersion, kind string, hasAV, hasKind bool) []byte {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return append(dst, obj...)
	}
	dst = append(dst, '{')
	if !hasAV {
		dst = append(dst, `"apiVersion":`...)
		dst = strconv.AppendQuote(dst, apiVersion)
	}
	if !hasKind {
		if !hasAV {
			dst = append(dst, ',')
		}
		dst = append(dst, `"kind":`...)
		dst = strconv.AppendQuote(dst, kind)
	}
	rest := obj[skipSpace(obj, i+1):]
	if len(rest) > 0 && rest[0] != '}' {
		dst = append(dst, ',')
	}
	return append(dst, rest...)
}

// inspect reads what a backup needs from an object's JSON without decoding it: metadata's
// namespace and name, and whether apiVersion and kind are present.
func inspect(obj []byte) (namespace, name string, hasAV, hasKind bool) {
	eachKey(obj, func(key, val []byte) {
		switch string(key) {
		case "apiVersion":
			hasAV = true
		case "kind":
			hasKind = true
		case "metadata":
			eachKey(val, func(key, val []byte) {
				switch string(key) {
				case "namespace":
					namespace = unquote(val)
				case "name":
					name = unquote(val)
				}
			})
		}
	})
	return
}

func unquote(val []byte) string {
	if len(val) < 2 || val[0] != '"' {
		return ""
	}
	if bytes.IndexByte(val, '\\') < 0 {
		return string(val[1 : len(val)-1])
	}
	var s string
	json.Unmarshal(val, &s)
	return s
}

// eachKey calls fn for each member of a JSON object (already known to be valid JSON).
func eachKey(obj []byte, fn func(key, val []byte)) {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return
	}
	i++
	for {
		i = skipSpace(obj, i)
		if i >= len(obj) || obj[i] != '"' {
			return
		}
		ke := skipString(obj, i)
		key := obj[i+1 : max(i+1, ke-1)]
		i = skipSpace(obj, ke)
		if i >= len(obj) || obj[i] != ':' {
			return
		}
		i = skipSpace(obj, i+1)
		ve := skipValue(obj, i)
		fn(key, obj[i:ve])
		i = skipSpace(obj, ve)
		if i >= len(obj) || obj[i] != ',' {
			return
		}
		i++
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i] == '"'.
func skipString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(b)
}

// skipValue returns the index after the value starting at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	default:
		for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\n' && b[i] != '\t' && b[i] != '\r' {
			i++
		}
		return i
	}
}
