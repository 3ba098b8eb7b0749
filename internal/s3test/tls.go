package s3test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"

	"planrun.dev/planrun/internal/testcerts"
)

// makeCertificate writes a throwaway CA (s.CAFile) and a certificate for 127.0.0.1 signed by
// it into s.root, and makes s.tlsConfig trust that CA. The certificates are valid for a day.
func (s *Server) makeCertificate() error {
	ca, err := testcerts.NewAuthority("planrun s3test CA")
	if err != nil {
		return fmt.Errorf("making the server's certificate authority: %w", err)
	}
	certPEM, keyPEM, err := ca.Sign("versitygw", nil, true)
	if err != nil {
		return fmt.Errorf("making the server's certificate: %w", err)
	}
	s.CAFile = filepath.Join(s.root, "ca.crt")
	s.certFile = filepath.Join(s.root, "server.crt")
	s.keyFile = filepath.Join(s.root, "server.key")
	for path, b := range map[string][]byte{s.CAFile: ca.PEM, s.certFile: certPEM, s.keyFile: keyPEM} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return fmt.Errorf("writing the server's certificate: %w", err)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	s.tlsConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return nil
}
