package s3test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"planrun.dev/planrun/internal/childproc"
)

// stopTimeout is how long Stop and Restart let versitygw finish its requests after SIGTERM
// before they kill it. An idle versitygw exits within a few tens of milliseconds.
const stopTimeout = 5 * time.Second

// Server is one running versitygw. Its methods may be called from several goroutines: a test
// kills the server while another goroutine uploads.
type Server struct {
	// Endpoint is the server's URL, "http://127.0.0.1:PORT" (https with Options.TLS); it stays
	// the same across Restart.
	Endpoint string
	// AccessKey and SecretKey are the root credentials, valid for every bucket.
	AccessKey, SecretKey string
	// Region is the region to sign requests for (Region).
	Region string
	// Dir is the folder served: BUCKET/KEY is the file of an object.
	Dir string
	// LogPath is versitygw's output, every run of it (one request per line); removed by Stop.
	LogPath string
	// CAFile, with Options.TLS, is the PEM certificate of the CA that signed the server's
	// certificate (Env passes it to the SDK as AWS_CA_BUNDLE); empty otherwise.
	CAFile string

	binary            string
	metaDir           string
	addr              string // 127.0.0.1:PORT
	root              string // a temporary folder for the log and certificates, and Dir and MetaDir unless given
	startTimeout      time.Duration
	certFile, keyFile string      // with Options.TLS
	tlsConfig         *tls.Config // with Options.TLS: trusts CAFile
	http              *awshttp.BuildableClient

	mu      sync.Mutex         // guards proc and stopped
	proc    *childproc.Process // the current run; nil after a failed Restart
	stopped bool

	clientOnce sync.Once
	client     *s3.Client
}

// Start starts versitygw on a free port of 127.0.0.1 and returns once it answers S3 requests
// signed with its keys, or fails, quoting the end of its output.
func Start(opts Options) (*Server, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("", "planrun-s3-")
	if err != nil {
		return nil, fmt.Errorf("starting versitygw: %w", err)
	}
	s := &Server{
		AccessKey:    opts.AccessKey,
		SecretKey:    opts.SecretKey,
		Region:       Region,
		LogPath:      filepath.Join(root, "versitygw.log"),
		binary:       opts.Binary,
		root:         root,
		startTimeout: opts.StartTimeout,
	}
	if err := s.makeFolders(opts.Dir, opts.MetaDir); err != nil {
		return nil, s.startFailed(err)
	}
	scheme := "http"
	if opts.TLS {
		scheme = "https"
		if err := s.makeCertificate(); err != nil {
			return nil, s.startFailed(err)
		}
	}
	s.http = s.newHTTPClient()
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, s.startFailed(err)
		}
		s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		s.Endpoint = scheme + "://" + s.addr
		err = s.run()
		if err == nil {
			return s, nil
		}
		if !errors.Is(err, errPortTaken) || attempt == portAttempts {
			return nil, s.startFailed(err)
		}
	}
}

// makeFolders sets Dir and metaDir to dir and metaDir, or to new folders in s.root, as absolute
// paths: versitygw resolves a relative sidecar folder against the folder it serves.
func (s *Server) makeFolders(dir, metaDir string) error {
	for _, f := range []struct {
		given string
		name  string
		set   *string
	}{{dir, "data", &s.Dir}, {metaDir, "meta", &s.metaDir}} {
		path := f.given
		if path == "" {
			path = filepath.Join(s.root, f.name)
		}
		path, err := filepath.Abs(path)
		if err != nil {
			return fmt.Errorf("the server's %s folder: %w", f.name, err)
		}
		if err := os.MkdirAll(path, 0o700); err != nil {
			return fmt.Errorf("the server's %s folder: %w", f.name, err)
		}
		*f.set = path
	}
	return nil
}

// startFailed removes what Start created except the log, which err points at once versitygw
// has run, and returns err.
func (s *Server) startFailed(err error) error {
	entries, _ := os.ReadDir(s.root)
	for _, e := range entries {
		if path := filepath.Join(s.root, e.Name()); path != s.LogPath {
			_ = os.RemoveAll(path)
		}
	}
	if _, statErr := os.Stat(s.LogPath); statErr != nil {
		_ = os.Remove(s.root) // nothing ran, so there is nothing to read
	}
	return err
}

// run starts versitygw on s.addr and waits until it answers. A process that fails to become
// ready is killed, so that no half-started server stays behind.
func (s *Server) run() error {
	p, err := startProcess(s.binary, s.args(), s.env(), s.LogPath)
	if err != nil {
		return err
	}
	if err := s.waitReady(p); err != nil {
		p.Kill()
		if portTaken(p.Output()) {
			err = fmt.Errorf("%w: %w", errPortTaken, err)
		}
		return fmt.Errorf("versitygw on %s: %w", s.addr, err)
	}
	s.proc = p
	return nil
}

// args are versitygw's arguments:
//   - --keep-alive: versitygw closes every connection after one response unless told
//     otherwise; S3 keeps them open, and clients' connection reuse (stale pooled connections
//     after a restart included) should be what it is against S3.
//   - posix --sidecar: metadata in a folder of its own, not in user.* extended attributes of
//     the object files, which versitygw otherwise requires of the file system at start
//     ("xattr check failed"): tmpfs before Linux 6.6 refuses them, and a test's result must not
//     depend on where its temporary folder lives.
func (s *Server) args() []string {
	args := []string{"--port", s.addr, "--region", Region, "--keep-alive"}
	if s.certFile != "" {
		args = append(args, "--cert", s.certFile, "--key", s.keyFile)
	}
	return append(args, "posix", "--sidecar", s.metaDir, s.Dir)
}

// env is versitygw's whole environment: it reads most of its flags from VGW_* variables, so an
// inherited environment could change the server under a test.
func (s *Server) env() []string {
	return []string{"ROOT_ACCESS_KEY=" + s.AccessKey, "ROOT_SECRET_KEY=" + s.SecretKey}
}

// Stop ends the server (SIGTERM, then SIGKILL after a few seconds), waits for it, and removes
// its temporary folders and log. It is safe to call more than once; a stopped server cannot be
// restarted.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	var errs []error
	if s.proc != nil {
		if err := s.proc.Stop(stopTimeout); err != nil {
			errs = append(errs, fmt.Errorf("versitygw on %s: %w", s.addr, err))
		}
	}
	if err := os.RemoveAll(s.root); err != nil {
		errs = append(errs, fmt.Errorf("removing the folder of versitygw on %s: %w", s.addr, err))
	}
	return errors.Join(errs...)
}

// Kill ends the server at once with SIGKILL, as a crash would: requests in flight get a reset
// connection, uploads in progress stay as they were. Restart brings it back.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.proc.Kill()
	}
}

// Restart starts the server again on the same port, folders and keys, after Kill or while it
// runs (it is stopped first), and waits until it answers. Objects, metadata and unfinished
// multipart uploads are kept.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return fmt.Errorf("restarting versitygw on %s: the server was stopped", s.addr)
	}
	if s.proc != nil {
		if err := s.proc.Stop(stopTimeout); err != nil {
			return fmt.Errorf("restarting versitygw on %s: %w", s.addr, err)
		}
		s.proc = nil
	}
	if err := s.run(); err != nil {
		return fmt.Errorf("restarting: %w", err)
	}
	return nil
}
