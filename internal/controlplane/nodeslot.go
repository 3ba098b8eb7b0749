package controlplane

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// Node slots. Every node on the machine needs its own bridge, pod CIDR and cgroup folder, also
// when several test binaries start nodes at the same time, so a node takes a numbered slot: an
// exclusive flock on slotDir/N.lock, which the kernel releases when the process dies. The slot
// file records what the node created, so that the next owner of the slot can sweep what a killed
// process left behind.
const (
	slotDir  = "/run/planrun/nodes"
	maxSlots = 64
)

// ErrNoNodeSlot means that maxSlots nodes already run on this machine.
var ErrNoNodeSlot = errors.New("no free node slot")

// nodeSlot is a held slot.
type nodeSlot struct {
	index int
	file  *os.File
}

// slotRecord is what a node writes into its slot file before creating anything.
type slotRecord struct {
	Dir        string `json:"dir"`        // the node's folder: configs, data, logs, sockets
	CgroupRoot string `json:"cgroupRoot"` // the kubelet's cgroup root, relative to each hierarchy
	Bridge     string `json:"bridge"`     // the CNI bridge
	Socket     string `json:"socket"`     // containerd's socket, named on its shims' command lines
	Network    string `json:"network"`    // the CNI network, which names its cached results
}

// bridgeName and podCIDR are fixed by the slot so that two nodes never overlap.
func (s *nodeSlot) bridgeName() string { return fmt.Sprintf("planrun%d", s.index) }
func (s *nodeSlot) podCIDR() string    { return fmt.Sprintf("10.244.%d.0/24", s.index) }
func (s *nodeSlot) network() string    { return fmt.Sprintf("planrun-node%d", s.index) }

// acquireSlot takes the first free slot, sweeping what an earlier owner left.
func acquireSlot() (*nodeSlot, error) {
	if err := os.MkdirAll(slotDir, 0o700); err != nil {
		return nil, fmt.Errorf("node slots: %w", err)
	}
	for i := range maxSlots {
		f, err := os.OpenFile(filepath.Join(slotDir, fmt.Sprintf("%d.lock", i)), os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			return nil, fmt.Errorf("node slots: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				continue
			}
			return nil, fmt.Errorf("node slots: locking %s: %w", f.Name(), err)
		}
		s := &nodeSlot{index: i, file: f}
		if err := s.sweep(); err != nil {
			s.release()
			return nil, err
		}
		return s, nil
	}
	return nil, fmt.Errorf("%w: %d nodes already run on this machine (%s)", ErrNoNodeSlot, maxSlots, slotDir)
}

// sweep removes what the slot's previous owner recorded and did not remove (it was killed).
func (s *nodeSlot) sweep() error {
	b, err := io.ReadAll(io.LimitReader(s.file, 64<<10))
	if err != nil {
		return fmt.Errorf("node slot %d: %w", s.index, err)
	}
	if len(b) == 0 {
		return nil
	}
	var rec slotRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		// A torn record names nothing that can be trusted; the slot's bridge is still known.
		rec = slotRecord{Bridge: s.bridgeName(), Network: s.network()}
	}
	if err := cleanupNode(rec); err != nil {
		return fmt.Errorf("node slot %d: sweeping what a killed node left: %w", s.index, err)
	}
	return s.record(slotRecord{})
}

// record replaces the slot file's content with rec (empty rec: nothing to sweep).
func (s *nodeSlot) record(rec slotRecord) error {
	var b []byte
	if rec != (slotRecord{}) {
		var err error
		if b, err = json.Marshal(rec); err != nil {
			return err
		}
	}
	if err := s.file.Truncate(0); err != nil {
		return fmt.Errorf("node slot %d: %w", s.index, err)
	}
	if _, err := s.file.WriteAt(b, 0); err != nil {
		return fmt.Errorf("node slot %d: %w", s.index, err)
	}
	return s.file.Sync()
}

// release empties the slot file and frees the slot.
func (s *nodeSlot) release() {
	_ = s.record(slotRecord{})
	s.file.Close() // closing the last descriptor drops the flock
}
