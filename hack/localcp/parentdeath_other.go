//go:build !linux

package main

// stopWithParent does nothing where there is no parent-death signal: signal this process
// itself to stop it.
func stopWithParent() error { return nil }
