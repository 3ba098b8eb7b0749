//go:build unix

package archive

import "syscall"

// noFollow makes the open fail when the last element of the path is a symlink.
const noFollow = syscall.O_NOFOLLOW
