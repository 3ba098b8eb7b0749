package s3test

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// errPortTaken says that versitygw could not listen on the port it was given: freePort's port
// was taken in between by another process (another test's server, most likely).
var errPortTaken = errors.New("port taken")

// portAttempts is how many free ports Start tries before giving up.
const portAttempts = 5

// freePort returns a port of 127.0.0.1 that nothing listens on at the time of the call.
// versitygw cannot take over a listening socket from its parent, so the port is closed again
// before it binds it; see errPortTaken for the race this leaves.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port on 127.0.0.1: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// portTaken reports whether versitygw's output says that it could not listen on its port.
func portTaken(output string) bool {
	return strings.Contains(output, "address already in use")
}
