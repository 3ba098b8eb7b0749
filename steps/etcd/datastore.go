// Package etcd is the shared base of the etcd step types, as steps/kube is for Kubernetes: it
// registers the plan's datastore type "etcd" and gives the steps one client per datastore.
//
// A plan declares its etcd clusters once:
//
//	datastores:
//	  source:
//	    type: etcd            # may be left out while etcd is the only datastore type
//	    endpoints: [https://10.0.0.1:2379, https://10.0.0.2:2379]
//	    tls:
//	      secret: {name: etcd-certs, namespace: kamaji-system}   # or ca/cert/key file paths
//	    dialTimeout: 5s
//	    requestTimeout: 30s
//
// and the steps name it (`datastore: source`). The API for step packages (stable):
//
//   - Connect(ctx, rc, name) returns the datastore's *clientv3.Client and its *Datastore config.
//     The client is made on first use in a run (reading TLS material from files or a Kubernetes
//     Secret, then checking that an endpoint answers within dialTimeout), shared by every step
//     of the run and closed by the engine when the run ends (a run-scoped shared value: no
//     client outlives its run, none is shared between runs). Callers must not Close it.
//   - (*Datastore).Name is the plan's name of the datastore; Endpoints, RequestTimeout... are
//     its decoded config.
//   - (*Datastore).Request(ctx) bounds one request by requestTimeout (default 30s).
//   - Error(name, err) words an error "datastore "name" (endpoints): err" and marks the retryable
//     ones transient (Classify).
//   - Classify(err) marks unavailable/timeouts/leader changes transient for the engine's retry.
package etcd

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube"
)

// Defaults of the connection timeouts.
const (
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 30 * time.Second
)

// Datastore is the config of a plan datastore of type etcd.
type Datastore struct {
	// Name is the plan's name of the datastore (set by Connect, not from the plan).
	Name string `yaml:"-"`

	Endpoints      []string        `yaml:"endpoints" plan:"required" doc:"Client URLs of the etcd members: https://host:2379 (TLS) or http://host:2379; host:port means http."`
	TLS            *TLS            `yaml:"tls" doc:"Client TLS: the CA to trust and the client certificate, from files or from a Kubernetes Secret."`
	Username       string          `yaml:"username" doc:"etcd user (etcd auth), with password or passwordFrom."`
	Password       string          `yaml:"password" doc:"Password of username."`
	PasswordFrom   *SecretKey      `yaml:"passwordFrom" doc:"Read the password from a key of a Kubernetes Secret instead."`
	DialTimeout    engine.Duration `yaml:"dialTimeout" doc:"How long to wait for an endpoint to answer when connecting (default 5s)."`
	RequestTimeout engine.Duration `yaml:"requestTimeout" doc:"Limit of one request to etcd (default 30s)."`
}

// The engine checks a datastore's config through Validator (Describe is for messages, not
// engine.Describer, which only steps use).
var (
	_ engine.Validator  = (*Datastore)(nil)
	_ kube.AccessNeeder = (*Datastore)(nil)
)

// Access implements kube.AccessNeeder for a datastore (no step's own; every step that connects
// to it needs it): get on each Secret its TLS material and password come from, on the Secret's
// cluster ("" is the plan's only cluster).
func (d *Datastore) Access() []kube.Rule {
	var out []kube.Rule
	get := func(cluster string) {
		out = append(out, kube.OnCluster(cluster, kube.ResourceRule("secrets", "get"))...)
	}
	if t := d.TLS; t != nil {
		if t.Secret != nil {
			get(t.Secret.Cluster)
		}
		for _, k := range []*SecretKey{t.CAFrom, t.CertFrom, t.KeyFrom} {
			if k != nil {
				get(k.Cluster)
			}
		}
	}
	if d.PasswordFrom != nil {
		get(d.PasswordFrom.Cluster)
	}
	return out
}

// TLS is where the client certificates come from: files, or one Kubernetes Secret.
type TLS struct {
	CA         string     `yaml:"ca" doc:"Path of the PEM CA bundle that signed the etcd server certificates (default: system roots)."`
	Cert       string     `yaml:"cert" doc:"Path of the PEM client certificate."`
	Key        string     `yaml:"key" doc:"Path of the PEM client private key."`
	Secret     *TLSSecret `yaml:"secret" doc:"Read the CA, certificate and key from one Kubernetes Secret instead of files."`
	CAFrom     *SecretKey `yaml:"caFrom" doc:"Read the CA from a key of a Kubernetes Secret (as Kamaji's DataStore declares each item: secret name, namespace and key)."`
	CertFrom   *SecretKey `yaml:"certFrom" doc:"Read the client certificate from a key of a Kubernetes Secret."`
	KeyFrom    *SecretKey `yaml:"keyFrom" doc:"Read the client private key from a key of a Kubernetes Secret."`
	ServerName string     `yaml:"serverName" doc:"Name to check in the server certificates, when it differs from the endpoint host."`
}

// TLSSecret is a Kubernetes Secret holding the TLS material.
type TLSSecret struct {
	Name      string `yaml:"name" plan:"required" doc:"Name of the Secret."`
	Namespace string `yaml:"namespace" plan:"required" doc:"Namespace of the Secret."`
	Cluster   string `yaml:"cluster" plan:"cluster" doc:"The plan cluster holding the Secret; may be left out when the plan has at most one."`
	CAKey     string `yaml:"caKey" doc:"Key of the CA certificate in the Secret (default ca.crt; empty value: system roots)."`
	CertKey   string `yaml:"certKey" doc:"Key of the client certificate (default tls.crt)."`
	KeyKey    string `yaml:"keyKey" doc:"Key of the client private key (default tls.key)."`
}

// SecretKey is one key of a Kubernetes Secret.
type SecretKey struct {
	Name      string `yaml:"name" plan:"required" doc:"Name of the Secret."`
	Namespace string `yaml:"namespace" plan:"required" doc:"Namespace of the Secret."`
	Cluster   string `yaml:"cluster" plan:"cluster" doc:"The plan cluster holding the Secret; may be left out when the plan has at most one."`
	Key       string `yaml:"key" plan:"required" doc:"Key in the Secret."`
}

func init() {
	engine.RegisterDatastore(engine.DatastoreType{
		Name: "etcd",
		Doc:  "An etcd cluster reached with go.etcd.io/etcd/client/v3: endpoints, TLS from files or a Kubernetes Secret, optional user.",
		New:  func() any { return &Datastore{} },
	})
}

// Validate checks the datastore config once its values are known.
func (d *Datastore) Validate() error {
	if len(d.Endpoints) == 0 {
		return errors.New("endpoints: at least one endpoint is required")
	}
	scheme := ""
	for _, e := range d.Endpoints {
		s, _, err := splitEndpoint(e)
		if err != nil {
			return fmt.Errorf("endpoints: %v", err)
		}
		if scheme != "" && s != scheme {
			return errors.New("endpoints: mixing http and https endpoints is not supported")
		}
		scheme = s
	}
	if t := d.TLS; t != nil {
		files := t.CA != "" || t.Cert != "" || t.Key != ""
		refs := t.CAFrom != nil || t.CertFrom != nil || t.KeyFrom != nil
		if t.Secret != nil && files || t.Secret != nil && refs || files && refs {
			return errors.New("tls: give one of secret, caFrom/certFrom/keyFrom or ca/cert/key files")
		}
		if (t.Cert == "") != (t.Key == "") {
			return errors.New("tls: cert and key go together")
		}
		if (t.CertFrom == nil) != (t.KeyFrom == nil) {
			return errors.New("tls: certFrom and keyFrom go together")
		}
	}
	if d.Password != "" && d.PasswordFrom != nil {
		return errors.New("password and passwordFrom: give one of them")
	}
	if d.Username == "" && (d.Password != "" || d.PasswordFrom != nil) {
		return errors.New("username: required with a password")
	}
	return nil
}

// splitEndpoint returns the scheme ("http" or "https") and host:port of an endpoint.
func splitEndpoint(e string) (string, string, error) {
	if !strings.Contains(e, "://") {
		if e == "" || strings.ContainsAny(e, "/ ") {
			return "", "", fmt.Errorf("%q is not a URL nor host:port", e)
		}
		return "http", e, nil
	}
	u, err := url.Parse(e)
	if err != nil || u.Host == "" {
		return "", "", fmt.Errorf("%q is not a URL such as https://host:2379", e)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", "", fmt.Errorf("%q: scheme must be http or https", e)
	}
	return u.Scheme, u.Host, nil
}

// Dial is the dial timeout (default 5s).
func (d *Datastore) Dial() time.Duration {
	if d.DialTimeout > 0 {
		return time.Duration(d.DialTimeout)
	}
	return DefaultDialTimeout
}

// Timeout is the limit of one request (default 30s).
func (d *Datastore) Timeout() time.Duration {
	if d.RequestTimeout > 0 {
		return time.Duration(d.RequestTimeout)
	}
	return DefaultRequestTimeout
}

// Request bounds one request by the datastore's request timeout.
func (d *Datastore) Request(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d.Timeout())
}

// Describe is "name (endpoint, ...)" for messages.
func (d *Datastore) Describe() string {
	return fmt.Sprintf("datastore %q (%s)", d.Name, strings.Join(d.Endpoints, ", "))
}

// Error words err as being about the datastore and classifies it.
func (d *Datastore) Error(err error) error {
	if err == nil {
		return nil
	}
	return Classify(fmt.Errorf("%s: %w", d.Describe(), err))
}

// Lookup returns the config of the plan's datastore name, checking it is an etcd datastore.
func Lookup(rc *engine.RunContext, name string) (*Datastore, error) {
	if name == "" {
		return nil, errors.New("datastore: required")
	}
	cfg, err := rc.Datastore(name)
	if err != nil {
		return nil, err
	}
	d, ok := cfg.(*Datastore)
	if !ok {
		return nil, fmt.Errorf("datastore %q is not an etcd datastore", name)
	}
	cp := *d
	cp.Name = name
	return &cp, nil
}

// connection is a run's client of one datastore; the engine closes it when the run ends.
type connection struct {
	client *clientv3.Client
	ds     *Datastore
}

func (c *connection) Close() error { return c.client.Close() }

// Connect returns the shared client of the plan's datastore name, connecting on first use in
// the run. The client belongs to the run: do not Close it.
func Connect(ctx context.Context, rc *engine.RunContext, name string) (*clientv3.Client, *Datastore, error) {
	ds, err := Lookup(rc, name)
	if err != nil {
		return nil, nil, err
	}
	v, err := rc.Shared("etcd.client/"+name, func() (any, error) {
		cli, err := dial(ctx, rc, ds)
		if err != nil {
			return nil, err
		}
		return &connection{client: cli, ds: ds}, nil
	})
	if err != nil {
		return nil, nil, err
	}
	c := v.(*connection)
	return c.client, c.ds, nil
}

// ConnectMember returns a client of the plan's datastore name that talks to one of its
// endpoints only (a snapshot must come from a chosen member: the balancer of a client with
// several endpoints picks any). Shared and owned like Connect's.
func ConnectMember(ctx context.Context, rc *engine.RunContext, name, endpoint string) (*clientv3.Client, error) {
	ds, err := Lookup(rc, name)
	if err != nil {
		return nil, err
	}
	if len(ds.Endpoints) == 1 {
		cli, _, err := Connect(ctx, rc, name)
		return cli, err
	}
	v, err := rc.Shared("etcd.member/"+name+"/"+endpoint, func() (any, error) {
		one := *ds
		one.Endpoints = []string{endpoint}
		cli, err := dial(ctx, rc, &one)
		if err != nil {
			return nil, err
		}
		return &connection{client: cli, ds: ds}, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*connection).client, nil
}

func dial(ctx context.Context, rc *engine.RunContext, ds *Datastore) (*clientv3.Client, error) {
	tlsCfg, err := tlsConfig(ctx, rc, ds)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ds.Describe(), err)
	}
	password := ds.Password
	if ds.PasswordFrom != nil {
		b, err := secretValue(ctx, rc, ds.PasswordFrom.Cluster, ds.PasswordFrom.Namespace, ds.PasswordFrom.Name, ds.PasswordFrom.Key)
		if err != nil {
			return nil, fmt.Errorf("%s: passwordFrom: %w", ds.Describe(), err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	endpoints := make([]string, len(ds.Endpoints))
	for i, e := range ds.Endpoints {
		if !strings.Contains(e, "://") {
			e = "http://" + e
		}
		endpoints[i] = e
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		TLS:                  tlsCfg,
		Username:             ds.Username,
		Password:             password,
		DialTimeout:          ds.Dial(),
		DialKeepAliveTime:    30 * time.Second,
		DialKeepAliveTimeout: 10 * time.Second,
		// Pages of 1,000 keys of up to 1.5 MiB each can be big.
		MaxCallRecvMsgSize: 1 << 30,
		Logger:             zap.NewNop(),
	})
	if err != nil {
		return nil, Classify(fmt.Errorf("%s: %w", ds.Describe(), err))
	}
	if err := probe(ctx, cli, ds, tlsCfg); err != nil {
		_ = cli.Close()
		return nil, err
	}
	return cli, nil
}

// probe checks that an endpoint answers within the dial timeout, so a wrong address or
// certificate fails at once with a clear message instead of at the first request.
func probe(ctx context.Context, cli *clientv3.Client, ds *Datastore, tlsCfg *tls.Config) error {
	var errs []string
	tlsFailed := false
	for _, e := range cli.Endpoints() {
		pctx, cancel := context.WithTimeout(ctx, ds.Dial())
		_, err := cli.Status(pctx, e)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// gRPC only says the deadline passed; a TLS handshake of our own tells why.
		if herr := handshake(ctx, e, tlsCfg); herr != nil {
			err, tlsFailed = herr, true
		}
		errs = append(errs, fmt.Sprintf("%s: %v", e, OneLine(err)))
	}
	err := fmt.Errorf("datastore %q: no endpoint answered within %s: %s", ds.Name, ds.Dial(), strings.Join(errs, "; "))
	if tlsFailed {
		return err
	}
	return engine.Transient(err)
}

// handshake returns the TLS error of an https endpoint that accepts connections, or nil.
func handshake(ctx context.Context, endpoint string, cfg *tls.Config) error {
	scheme, host, err := splitEndpoint(endpoint)
	if err != nil || scheme != "https" || cfg == nil {
		return nil
	}
	cfg = cfg.Clone()
	if cfg.ServerName == "" {
		if h, _, err := net.SplitHostPort(host); err == nil {
			cfg.ServerName = h
		}
	}
	cfg.NextProtos = []string{"h2"}
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := (&tls.Dialer{Config: cfg}).DialContext(dctx, "tcp", host)
	if err != nil {
		if isTLSFailure(err) {
			return fmt.Errorf("TLS handshake: %v", err)
		}
		return nil
	}
	defer conn.Close()
	// With TLS 1.3 the server judges the client certificate after the handshake: its verdict
	// arrives as an alert on the first read.
	_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, err = conn.Read(make([]byte, 1))
	if err != nil && isTLSFailure(err) {
		return fmt.Errorf("TLS handshake: %v", err)
	}
	return nil
}

// isTLSFailure reports whether err is the TLS layer refusing the connection (rather than the
// network failing): a certificate that does not verify (x509's errors come wrapped in
// tls.CertificateVerificationError), a peer that does not speak TLS, or a TLS alert. On a TCP
// connection crypto/tls reports an alert, received or sent, as a *net.OpError with Op "remote
// error" or "local error" around its unexported alert type; tls.AlertError is QUIC's.
func isTLSFailure(err error) bool {
	var verify *tls.CertificateVerificationError
	var header tls.RecordHeaderError
	var alert tls.AlertError
	var op *net.OpError
	if errors.As(err, &verify) || errors.As(err, &header) || errors.As(err, &alert) ||
		errors.As(err, &op) && (op.Op == "remote error" || op.Op == "local error") {
		return true
	}
	// No type: crypto/tls returns its other handshake failures (a version or cipher suite it
	// does not support, a certificate it cannot parse) as errors.New/fmt.Errorf text.
	return strings.HasPrefix(err.Error(), "tls: ")
}

// tlsConfig builds the client TLS config; nil for plain http endpoints without a tls block.
func tlsConfig(ctx context.Context, rc *engine.RunContext, ds *Datastore) (*tls.Config, error) {
	https := false
	for _, e := range ds.Endpoints {
		if s, _, _ := splitEndpoint(e); s == "https" {
			https = true
		}
	}
	if ds.TLS == nil && !https {
		return nil, nil
	}
	var ca, cert, key []byte
	var caWhere, certWhere string
	t := ds.TLS
	if t == nil {
		t = &TLS{}
	}
	switch {
	case t.Secret != nil:
		s := t.Secret
		data, err := secretData(ctx, rc, s.Cluster, s.Namespace, s.Name)
		if err != nil {
			return nil, fmt.Errorf("tls.secret: %w", err)
		}
		caKey, certKey, keyKey := cmp.Or(s.CAKey, "ca.crt"), cmp.Or(s.CertKey, "tls.crt"), cmp.Or(s.KeyKey, "tls.key")
		where := fmt.Sprintf("Secret %s/%s", s.Namespace, s.Name)
		ca = data[caKey]
		if s.CAKey != "" && ca == nil {
			return nil, fmt.Errorf("tls.secret: %s has no key %q", where, caKey)
		}
		cert, key = data[certKey], data[keyKey]
		if (cert == nil) != (key == nil) {
			missing := certKey
			if key == nil {
				missing = keyKey
			}
			return nil, fmt.Errorf("tls.secret: %s has no key %q", where, missing)
		}
		caWhere = fmt.Sprintf("%s key %s", where, caKey)
		certWhere = fmt.Sprintf("%s keys %s/%s", where, certKey, keyKey)
	case t.CAFrom != nil || t.CertFrom != nil:
		var err error
		if r := t.CAFrom; r != nil {
			if ca, err = secretValue(ctx, rc, r.Cluster, r.Namespace, r.Name, r.Key); err != nil {
				return nil, fmt.Errorf("tls.caFrom: %w", err)
			}
			caWhere = fmt.Sprintf("Secret %s/%s key %s", r.Namespace, r.Name, r.Key)
		}
		if r := t.CertFrom; r != nil {
			if cert, err = secretValue(ctx, rc, r.Cluster, r.Namespace, r.Name, r.Key); err != nil {
				return nil, fmt.Errorf("tls.certFrom: %w", err)
			}
			k := t.KeyFrom
			if key, err = secretValue(ctx, rc, k.Cluster, k.Namespace, k.Name, k.Key); err != nil {
				return nil, fmt.Errorf("tls.keyFrom: %w", err)
			}
			certWhere = fmt.Sprintf("Secret %s/%s key %s and Secret %s/%s key %s", r.Namespace, r.Name, r.Key, k.Namespace, k.Name, k.Key)
		}
	default:
		var err error
		if t.CA != "" {
			if ca, err = os.ReadFile(t.CA); err != nil {
				return nil, fmt.Errorf("tls.ca: %w", err)
			}
			caWhere = t.CA
		}
		if t.Cert != "" {
			if cert, err = os.ReadFile(t.Cert); err != nil {
				return nil, fmt.Errorf("tls.cert: %w", err)
			}
			if key, err = os.ReadFile(t.Key); err != nil {
				return nil, fmt.Errorf("tls.key: %w", err)
			}
			certWhere = t.Cert + " and " + t.Key
		}
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if ca != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return nil, fmt.Errorf("tls: %s holds no PEM certificate", caWhere)
		}
		cfg.RootCAs = pool
	}
	if cert != nil {
		pair, err := tls.X509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("tls: client certificate %s: %v", certWhere, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

var secretsGVR = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}

// secretData reads a Secret through the plan cluster's shared Kubernetes client.
func secretData(ctx context.Context, rc *engine.RunContext, cluster, namespace, name string) (map[string][]byte, error) {
	c, err := kube.ClusterRef{Cluster: cluster}.Client(rc)
	if err != nil {
		return nil, err
	}
	u, err := c.Dynamic.Resource(secretsGVR).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, kube.ObjectError("Secret", namespace, name, err)
	}
	raw, _ := u.Object["data"].(map[string]any)
	out := map[string][]byte{}
	for k, v := range raw {
		s, _ := v.(string)
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("Secret %s/%s key %s: %v", namespace, name, k, err)
		}
		out[k] = b
	}
	return out, nil
}

func secretValue(ctx context.Context, rc *engine.RunContext, cluster, namespace, name, key string) ([]byte, error) {
	data, err := secretData(ctx, rc, cluster, namespace, name)
	if err != nil {
		return nil, err
	}
	v, ok := data[key]
	if !ok {
		return nil, fmt.Errorf("Secret %s/%s has no key %q", namespace, name, key)
	}
	return v, nil
}

// OneLine is the text of err on one line: its words with single spaces between them.
func OneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
