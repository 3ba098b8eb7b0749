// Package mover moves the data of persistent volumes through a kopia repository kept in a
// storage.Location (the replication repository): ConnectRepository opens or creates it, and
// the mover pods back volumes up into it and restore them from it.
package mover

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/blob"
	"github.com/kopia/kopia/repo/content"
	"github.com/kopia/kopia/repo/encryption"
	"github.com/kopia/kopia/repo/format"
	"github.com/kopia/kopia/repo/hashing"
	"golang.org/x/crypto/scrypt"

	"planrun.dev/planrun/steps/storage"
)

// DefaultPassword is the repository password when none is given (PLANRUN_MOVER_PASSWORD
// empty). Kopia always encrypts; with this documented password the bucket's access control is
// what protects the data, as with Velero's default.
const DefaultPassword = "planrun-static-passw0rd"

var (
	// ErrWrongPassword: the repository exists and was created with another password.
	ErrWrongPassword = errors.New("wrong repository password")
	// ErrNoRepository: no repository in the location, and the options did not allow creating
	// one (ReadOnly).
	ErrNoRepository = errors.New("no kopia repository")
)

// RepositoryOptions say how to open a repository. Every field is optional.
type RepositoryOptions struct {
	// Password is the repository's password; "" is DefaultPassword.
	Password string
	// WorkDir holds kopia's configuration file and caches; "" is a new temporary folder,
	// removed by Close. One WorkDir serves one open repository at a time.
	WorkDir string
	// Hostname and Username are kopia's client identity, recorded in the snapshots and
	// sessions it writes; "" is "planrun" and "mover".
	Hostname, Username string
	// ReadOnly opens the repository without ever writing to the location (restore, verify);
	// an absent repository is then ErrNoRepository instead of being created.
	ReadOnly bool
	// MetadataCacheBytes and ContentCacheBytes bound kopia's caches in WorkDir (soft
	// limits): 0 is 512 MiB and, for a backup, 64 MiB. The metadata cache holds whole metadata
	// packs (directory listings, manifests), read again and again by an incremental backup
	// that walks its parent snapshot. ReadOnly, the data cache is where Restore fetches files
	// ahead, whole packs at a time: 0 is 256 MiB, and never more than twice the size.
	MetadataCacheBytes, ContentCacheBytes int64
	// Logger receives kopia's logs at debug level (WithKopiaLog); nil discards them.
	Logger *slog.Logger
}

// Repository is an open kopia repository: a repo.DirectRepository whose Close also releases
// what ConnectRepository set up.
type Repository struct {
	repo.DirectRepository

	// Location is where the repository is stored; it stays the caller's to close.
	Location storage.Location

	st         *blobStore
	workDir    string
	removeWork bool
	// prefetch: Restore may fetch files ahead into the data cache, sized for it.
	prefetch bool

	closeOnce sync.Once
	closeErr  error
	fatal     struct {
		sync.Mutex
		err error
	}
}

// ConnectRepository opens the kopia repository stored in loc, creating it when loc holds none.
// Several processes may create the same repository at once (one mover per claim): they all
// end up in the one repository (see newRepositoryOptions).
//
// Errors name the location on one line and match ErrWrongPassword, ErrNoRepository, or the
// location's own errors (storage.ErrUnreachable, ErrAccessDenied, ErrNoBucket...).
func ConnectRepository(ctx context.Context, loc storage.Location, opts RepositoryOptions) (_ *Repository, err error) {
	password := opts.Password
	if password == "" {
		password = DefaultPassword
	}
	r := &Repository{Location: loc, st: &blobStore{loc: loc}, workDir: opts.WorkDir}
	defer func() {
		if err != nil {
			r.release()
		}
	}()
	if r.workDir == "" {
		if r.workDir, err = os.MkdirTemp("", "planrun-kopia-"); err != nil {
			return nil, err
		}
		r.removeWork = true
	} else if err := os.MkdirAll(r.workDir, 0o700); err != nil {
		return nil, err
	}
	ctx = WithKopiaLog(ctx, opts.Logger)

	if err := ensureRepository(ctx, r.st, loc, password, opts.ReadOnly); err != nil {
		return nil, repositoryError(loc, err)
	}
	configFile := filepath.Join(r.workDir, "repository.config")
	co := &repo.ConnectOptions{
		ClientOptions: repo.ClientOptions{
			Hostname:    orDefault(opts.Hostname, "planrun"),
			Username:    orDefault(opts.Username, "mover"),
			ReadOnly:    opts.ReadOnly,
			Description: "planrun mover repository in " + r.st.DisplayName(),
		},
		CachingOptions: content.CachingOptions{
			CacheDirectory:         filepath.Join(r.workDir, "cache"),
			MetadataCacheSizeBytes: orDefaultInt(opts.MetadataCacheBytes, 512<<20),
			ContentCacheSizeBytes:  orDefaultInt(opts.ContentCacheBytes, 64<<20),
		},
	}
	if opts.ReadOnly {
		// Restore fetches files ahead into the data cache (see prefetchBatchBytes), whole packs
		// at a time, and reads each once: older entries go as soon as the cache is over its
		// size, not after kopia's ten minutes, and never is it more than twice that.
		data := orDefaultInt(opts.ContentCacheBytes, 256<<20)
		co.CachingOptions.ContentCacheSizeBytes = data
		co.CachingOptions.ContentCacheSizeLimitBytes = 2 * data
		co.CachingOptions.MinContentSweepAge = 1 // second
		r.prefetch = true
	}
	if err := writeConnection(ctx, configFile, r.st, co); err != nil {
		return nil, repositoryError(loc, err)
	}
	rep, err := repo.Open(ctx, configFile, password, &repo.Options{
		// Kopia's internal log goes into the repository as blobs of its own ("_log_"); our
		// logs are the mover's events.
		DisableInternalLog: true,
		// Kopia's default exits the process. A fatal error (an upgrade of the repository's
		// format started by someone else) fails the operation under way; Close reports it.
		OnFatalError: func(err error) {
			r.fatal.Lock()
			r.fatal.err = errors.Join(r.fatal.err, err)
			r.fatal.Unlock()
		},
	})
	if err != nil {
		return nil, repositoryError(loc, err)
	}
	dr, ok := rep.(repo.DirectRepository)
	if !ok {
		rep.Close(ctx)
		return nil, fmt.Errorf("kopia repository in %s: opened as %T, not a direct repository", r.st.DisplayName(), rep)
	}
	r.DirectRepository = dr
	return r, nil
}

// writeConnection writes kopia's configuration file for st, what repo.Connect writes, without
// repo.Connect's check that the repository opens with it: that check is a whole repo.Open (a
// scrypt key derivation of 64 MiB and a third of a second of CPU, every index read) which
// ConnectRepository does right after anyway, and its errors are the same.
func writeConnection(ctx context.Context, configFile string, st blob.Storage, co *repo.ConnectOptions) error {
	ci := st.ConnectionInfo()
	lc := repo.LocalConfig{Storage: &ci, ClientOptions: co.ClientOptions.ApplyDefaults(ctx, ""), Caching: &content.CachingOptions{}}
	if co.CachingOptions.CacheDirectory != "" && co.CachingOptions.ContentCacheSizeBytes != 0 {
		caching := co.CachingOptions
		dir, err := filepath.Abs(caching.CacheDirectory) // kopia wants it absolute
		if err != nil {
			return err
		}
		caching.CacheDirectory = dir
		lc.Caching = &caching
	}
	b, err := json.MarshalIndent(lc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(configFile, b, 0o600)
}

// Close closes the repository, then removes the work folder when ConnectRepository made it.
// The Location stays open.
func (r *Repository) Close(ctx context.Context) error {
	r.closeOnce.Do(func() {
		if r.DirectRepository != nil {
			r.closeErr = r.DirectRepository.Close(ctx)
		}
		r.fatal.Lock()
		r.closeErr = errors.Join(r.closeErr, r.fatal.err)
		r.fatal.Unlock()
		r.release()
	})
	return r.closeErr
}

func (r *Repository) release() {
	r.st.Close(context.Background())
	if r.removeWork {
		_ = os.RemoveAll(r.workDir)
	}
}

// repositoryError says in one line what failed where: a wrong password, or the location's own
// error (kopia's wrapping dropped), or kopia's.
func repositoryError(loc storage.Location, err error) error {
	where := "kopia repository in " + storage.Display(loc.String())
	var se *storage.Error
	switch {
	case errors.Is(err, repo.ErrInvalidPassword):
		return fmt.Errorf("%s: %w (give the password it was created with)", where, ErrWrongPassword)
	case errors.Is(err, ErrNoRepository):
		return fmt.Errorf("%s: %w", where, ErrNoRepository)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", where, err)
	case errors.As(err, &se):
		return se
	}
	return fmt.Errorf("%s: %s", where, strings.ReplaceAll(err.Error(), "\n", " "))
}

// Creation. Kopia creates a repository by writing two blobs, kopia.blobcfg then
// kopia.repository, with keys drawn at random, after checking that neither exists. Two movers
// creating the same repository at once would both find it absent and both write: the survivor
// of each blob would be one or the other's, with different keys — a repository that no one
// can open, or one whose first packs were written with keys that lost. A Location has no
// conditional write to make one creator win (not every S3-compatible server has If-None-Match
// either), so every creator writes the same repository instead: its id is derived from the
// location's URL, and its master key and HMAC secret from the password, salted with that id,
// through scrypt with kopia's own parameters (scrypt-65536-8-1). Whatever mix of the creators'
// blobs survives, it opens, with the same keys. This costs no secrecy compared to kopia's
// random keys: kopia stores those keys in kopia.repository, encrypted with a key derived from
// the same password through the same scrypt, so whoever can read the bucket and guess the
// password has them either way, at the same cost per guess; and without the bucket, keys are
// of no use.

// newRepositoryOptions are the options of a new repository in loc.
//
// Choices (kopia's current defaults, written out so that they do not change under us):
//   - format version 3, index v2 and epochs: several clients (movers) write the repository at
//     once;
//   - hash BLAKE2B-256-128 and encryption AES256-GCM-HMAC-SHA256: kopia's defaults, fast
//     on CPUs with AES instructions;
//   - no ECC: the object store keeps the bytes; ECC would cost space on every pack;
//   - splitter DYNAMIC-4M-BUZHASH: content-defined chunks of 4 MiB on average, so that an
//     insertion in a large file (a database file) re-uploads the chunks around it only;
//   - packs of at most 20 MiB: few requests per GiB, and a failed upload redoes little;
//   - compression is a policy of the snapshots (Backup), not of the repository.
func newRepositoryOptions(loc storage.Location, password string) (*repo.NewRepositoryOptions, error) {
	id := repositoryID(loc)
	secret, err := scrypt.Key([]byte(password), id, 1<<16, 8, 1, 32)
	if err != nil {
		return nil, err
	}
	masterKey, err := hkdf.Key(sha256.New, secret, id, "planrun mover: kopia master key", 32)
	if err != nil {
		return nil, err
	}
	hmacSecret, err := hkdf.Key(sha256.New, secret, id, "planrun mover: kopia hmac secret", 32)
	if err != nil {
		return nil, err
	}
	return &repo.NewRepositoryOptions{
		UniqueID: id,
		BlockFormat: format.ContentFormat{
			Hash:       hashing.DefaultAlgorithm,
			Encryption: encryption.DefaultAlgorithm,
			HMACSecret: hmacSecret,
			MasterKey:  masterKey,
			MutableParameters: format.MutableParameters{
				Version:     format.FormatVersion3,
				MaxPackSize: 20 << 20,
			},
		},
		ObjectFormat: format.ObjectFormat{Splitter: "DYNAMIC-4M-BUZHASH"},
	}, nil
}

// repositoryID is the id of the repository in loc (format.UniqueIDLengthBytes bytes), from
// its URL without options: the movers of one repository may reach its bucket through other
// endpoints or regions.
func repositoryID(loc storage.Location) []byte {
	name := loc.String()
	if u, err := url.Parse(name); err == nil && u.Scheme != "" && u.Host != "" {
		name = u.Scheme + "://" + u.Host + "/" + strings.Trim(u.Path, "/")
	} else {
		name = filepath.Clean(name)
	}
	sum := sha256.Sum256([]byte("planrun mover repository\x00" + name))
	return sum[:format.UniqueIDLengthBytes]
}

// creationWait is how long a creator that finds kopia.blobcfg without kopia.repository waits
// for the other creator's second write before taking it for one that died in between.
var creationWait = 15 * time.Second

// ensureRepository creates the repository in loc unless it exists.
func ensureRepository(ctx context.Context, st *blobStore, loc storage.Location, password string, readOnly bool) error {
	exists := func(id blob.ID) (bool, error) {
		var b outputBuffer
		err := st.GetBlob(ctx, id, 0, -1, &b)
		if errors.Is(err, blob.ErrBlobNotFound) {
			return false, nil
		}
		return err == nil, err
	}
	// A read (not a HEAD) first: on S3 only a body says "no such bucket".
	ok, err := exists(format.KopiaRepositoryBlobID)
	if ok || err != nil {
		return err
	}
	if readOnly {
		return ErrNoRepository
	}
	opts, err := newRepositoryOptions(loc, password)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		err := repo.Initialize(ctx, st, opts, password)
		if err == nil || errors.Is(err, repo.ErrAlreadyInitialized) {
			return nil
		}
		// kopia.blobcfg alone: another creator is between its two writes.
		if cfg, cerr := exists(format.KopiaBlobCfgBlobID); cerr != nil || !cfg || attempt == 2 {
			return err
		}
		deadline := time.Now().Add(creationWait)
		for time.Now().Before(deadline) {
			if ok, err := exists(format.KopiaRepositoryBlobID); ok || err != nil {
				return err
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
		// It died in between: what it wrote is what we would write; start again.
		if err := st.DeleteBlob(ctx, format.KopiaBlobCfgBlobID); err != nil {
			return err
		}
	}
}

// outputBuffer is a blob.OutputBuffer in memory.
type outputBuffer struct{ bytes.Buffer }

func (b *outputBuffer) Length() int { return b.Len() }

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func orDefaultInt(n, def int64) int64 {
	if n == 0 {
		return def
	}
	return n
}
