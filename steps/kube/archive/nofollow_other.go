//go:build !unix

package archive

// noFollow is not available here; openEntry's Lstat and the Stat of the open file still refuse
// a symlink.
const noFollow = 0
