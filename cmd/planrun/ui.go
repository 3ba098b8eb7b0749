package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"planrun.dev/planrun/console"
)

var uiCommand = &command{
	name:     "ui",
	usage:    "[--listen ADDR] [--token-file FILE] [--run RUN]",
	summary:  "Serve the operator console in the browser: runs, timelines, live progress, files, resume/rollback/cancel, fleets.",
	complete: completeNone,
	flags: func(fs *pflag.FlagSet, a *app) {
		fs.StringVar(&a.ui.listen, "listen", "127.0.0.1:8470", "address to serve on (port 0: any free port); the console starts and stops runs, so keep it on loopback unless a proxy guards it")
		fs.StringVar(&a.ui.tokenFile, "token-file", "", "file holding the access token (default: a new random token, printed in the URL)")
		fs.StringVar(&a.ui.run, "run", "", "print the URL of this run's page")
	},
	run: func(ctx context.Context, a *app, args []string) error {
		if len(args) != 0 {
			return usagef("ui takes no arguments")
		}
		token, err := a.ui.token()
		if err != nil {
			return err
		}
		store, err := a.store(ctx)
		if err != nil {
			return err
		}
		fleets, err := a.fleetStore(ctx)
		if err != nil {
			return err
		}
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		srv, err := console.New(console.Options{
			Store:    store,
			Fleets:   fleets,
			Token:    token,
			Launcher: &processLauncher{exe: exe, args: a.stateArgs(), store: store, logger: a.logger},
			Logger:   a.logger,
		})
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", a.ui.listen)
		if err != nil {
			return usagef("--listen %s: %v (--listen 127.0.0.1:0 takes any free port)", a.ui.listen, err)
		}
		host := ln.Addr().String()
		if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() {
			fmt.Fprintf(a.stderr, "planrun ui: serving on %s, beyond this machine, over plain HTTP: the token is all that guards it\n", host)
		}
		path := "/"
		if a.ui.run != "" {
			path = "/runs/" + url.PathEscape(a.ui.run)
		}
		fmt.Fprintf(a.stdout, "planrun console: http://%s%s?token=%s\n(Ctrl-C stops it; runs it started go on)\n", host, path, url.QueryEscape(token))
		hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
		errc := make(chan error, 1)
		go func() { errc <- hs.Serve(ln) }()
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
		}
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = hs.Shutdown(shut) // live streams end with the process
		return nil
	},
}

// uiFlags are planrun ui's flags.
type uiFlags struct {
	listen, tokenFile, run string
}

// token is the console's access token: the file's, or a new random one.
func (f *uiFlags) token() (string, error) {
	if f.tokenFile == "" {
		b := make([]byte, 24)
		if _, err := rand.Read(b); err != nil {
			return "", err
		}
		return hex.EncodeToString(b), nil
	}
	data, err := os.ReadFile(f.tokenFile)
	if err != nil {
		return "", usagef("--token-file: %v", err)
	}
	token := strings.TrimSpace(string(data))
	if len(token) < 16 || strings.ContainsAny(token, " \t\r\n") {
		return "", usagef("--token-file %s: the token must be one word of at least 16 characters", f.tokenFile)
	}
	return token, nil
}

// stateArgs are the flags that make another planrun see the runs this one sees.
func (a *app) stateArgs() []string {
	args := []string{"--state-dir", a.stateDir}
	add := func(flag, v string) {
		if v != "" {
			args = append(args, flag, v)
		}
	}
	add("--state", a.state)
	add("--kubeconfig", a.kubeconfig)
	add("--context", a.kubeContext)
	add("--artifacts", a.artifacts)
	add("--artifacts-credentials-from", a.artifactCreds)
	return args
}

var errLaunch = errors.New("the runner did not start")
