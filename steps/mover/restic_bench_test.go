package mover

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"planrun.dev/planrun/internal/fstree"
	"planrun.dev/planrun/internal/s3test"
)

// BenchmarkMoverVsRestic measures the volume mover as it runs in the mover pods — the planrun
// binary as a process, `planrun mover backup --stage` and `planrun mover restore`, the restore
// started with the backup and waiting for the snapshot it hands off (--handoff), as
// kube.copyVolumes starts the target's pod beside the source's; each with a fresh --workdir (a new pod's empty emptyDir) and its keys from --credentials-dir — against
// what a user would pick instead: `restic backup` then `restic restore` (restic's defaults, a
// fresh --cache-dir each), both through the same S3 server (versitygw on loopback), on the same
// tree: benchSpec, PLANRUN_BENCH_MOVER_MB MiB (default 1024).
//
//   - Stage 1: backup + restore into an empty folder, end to end (restic's `init` counted in its
//     backup, as the mover's first backup creates its repository). Target: the mover's
//     throughput at least 0.8x restic's.
//   - Stage 2, after 1 % of the files changed (fstree.Mutate): backup + incremental restore into
//     the stage-1 copy. Target: at least 10x faster than stage 1. Restic's stage 2 is reported
//     for reference; restic 0.14 restore rewrites every file and deletes nothing, so its stage 2
//     restores into an empty folder.
//   - Peak memory: each process's peak RSS (rusage), stage-1 backup and restore, at the full
//     size and at a quarter of it: the mover's should not grow with the data.
//
// Every copy is compared with its source (fstree.Diff: content, mode, owner, mtimes, links).
// The mover's restore ends with a syncfs (the copy is on disk when it says so); restic's does
// not, and is timed without.
// Run with -benchtime=1x; hack/bench.sh collects the summary line. Skips without restic
// (hack/install-bench-deps.sh installs it).
func BenchmarkMoverVsRestic(b *testing.B) {
	if os.Getenv(s3test.BinaryEnv) == "" {
		b.Skipf("no S3 server: set $%s (hack/build-s3-server.sh prints it)", s3test.BinaryEnv)
	}
	restic, err := exec.LookPath("restic")
	if err != nil {
		b.Skip("no restic: hack/install-bench-deps.sh installs it (Debian package restic)")
	}
	resticVersion := "restic"
	if out, err := exec.Command(restic, "version").Output(); err == nil {
		if f := strings.Fields(string(out)); len(f) >= 2 {
			resticVersion = "restic " + f[1]
		}
	}
	mb := benchMB(b, 1024)
	root := b.TempDir()
	planrun := buildPlanrun(b, root)
	srv := s3test.StartForTest(b)
	if err := srv.CreateBucket("bench"); err != nil {
		b.Fatal(err)
	}
	creds := filepath.Join(root, "credentials")
	if err := os.Mkdir(creds, 0o700); err != nil {
		b.Fatal(err)
	}
	for k, v := range map[string]string{"accessKeyID": srv.AccessKey, "secretAccessKey": srv.SecretKey} {
		if err := os.WriteFile(filepath.Join(creds, k), []byte(v), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	t := &volumeBench{b: b, root: root, planrun: planrun, restic: restic, srv: srv, creds: creds}

	sizes := []int64{mb, mb / 4}
	srcs := make([]string, len(sizes))
	var sum fstree.Summary
	for i, size := range sizes {
		srcs[i] = filepath.Join(root, fmt.Sprintf("src-%dM", size))
		s, err := fstree.Generate(srcs[i], benchSpec(size))
		if err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			sum = s
		}
	}
	mib := float64(sum.Bytes) / (1 << 20)

	type stage = copyRun
	var mover1, mover2, restic1, restic2, moverQ, resticQ stage
	b.ResetTimer()
	for i := range b.N {
		src := srcs[0]
		b.StopTimer()
		want := t.tree(src)
		b.StartTimer()
		mdst, rdst := t.dir("mover-dst"), t.dir("restic-dst")
		moverRepo, resticRepo := fmt.Sprintf("mover-%d", i), fmt.Sprintf("restic-%d", i)

		// Stage 1.
		mover1 = t.moverCopy(moverRepo, src, mdst)
		restic1.backup = t.resticBackup(resticRepo, src, true)
		restic1.restore = t.resticRestore(resticRepo, rdst)
		b.StopTimer()
		t.same("mover stage 1", want, mdst)
		t.same("restic stage 1", want, rdst)
		m, err := fstree.Mutate(src, 1, uint64(100+i))
		if err != nil {
			b.Fatal(err)
		}
		want = t.tree(src)
		rdst2 := t.dir("restic-dst2")
		b.StartTimer()

		// Stage 2, 1 % changed.
		mover2 = t.moverCopy(moverRepo, src, mdst)
		restic2.backup = t.resticBackup(resticRepo, src, false)
		restic2.restore = t.resticRestore(resticRepo, rdst2)
		b.StopTimer()
		t.same("mover stage 2", want, mdst)
		t.same("restic stage 2", want, rdst2)
		b.Logf("stage 2 after %d rewritten, %d appended, %d deleted, %d added, 1 renamed (%d bytes written): mover read %d bytes, uploaded %d, wrote %d files on restore, deleted %d",
			m.Rewritten, m.Appended, m.Deleted, m.Added, m.BytesWritten, mover2.backup.read, mover2.backup.uploaded, mover2.restore.written, mover2.restore.deleted)

		// A quarter of the data: peak memory.
		want = t.tree(srcs[1])
		qm, qr := t.dir("mover-dst-q"), t.dir("restic-dst-q")
		b.StartTimer()
		moverQ = t.moverCopy(moverRepo+"-q", srcs[1], qm)
		resticQ.backup = t.resticBackup(resticRepo+"-q", srcs[1], true)
		resticQ.restore = t.resticRestore(resticRepo+"-q", qr)
		b.StopTimer()
		t.same("mover, quarter size", want, qm)
		t.same("restic, quarter size", want, qr)
		for _, d := range []string{mdst, rdst, rdst2, qm, qr} {
			_ = os.RemoveAll(d)
		}
		b.StartTimer()
	}

	secs := copyRun.secs
	moverMiBps, resticMiBps := mib/secs(mover1), mib/secs(restic1)
	ratio := moverMiBps / resticMiBps
	speedup := secs(mover1) / secs(mover2)
	b.ReportMetric(moverMiBps, "mover-MiB/s")
	b.ReportMetric(resticMiBps, "restic-MiB/s")
	b.ReportMetric(ratio, "ratio")
	b.ReportMetric(mib/mover1.backup.seconds, "mover-backup-MiB/s")
	b.ReportMetric(mib/(mover1.wall-mover1.backup.seconds), "mover-restore-MiB/s") // what the restore adds after the backup
	b.ReportMetric(mib/restic1.backup.seconds, "restic-backup-MiB/s")
	b.ReportMetric(mib/restic1.restore.seconds, "restic-restore-MiB/s")
	b.ReportMetric(secs(mover1), "mover-stage1-s")
	b.ReportMetric(secs(mover2), "mover-stage2-s")
	b.ReportMetric(secs(mover2)/secs(mover1), "mover-stage2/stage1")
	b.ReportMetric(speedup, "mover-stage2-speedup")
	b.ReportMetric(secs(restic2)/secs(restic1), "restic-stage2/stage1")
	b.ReportMetric(mover1.backup.rss, "mover-backup-RSS-MiB")
	b.ReportMetric(mover1.restore.rss, "mover-restore-RSS-MiB")
	b.ReportMetric(moverQ.backup.rss, "mover-backup-RSS-MiB-quarter")
	b.ReportMetric(moverQ.restore.rss, "mover-restore-RSS-MiB-quarter")
	b.ReportMetric(restic1.backup.rss, "restic-backup-RSS-MiB")
	b.ReportMetric(restic1.restore.rss, "restic-restore-RSS-MiB")
	b.ReportMetric(resticQ.backup.rss, "restic-backup-RSS-MiB-quarter")
	b.ReportMetric(resticQ.restore.rss, "restic-restore-RSS-MiB-quarter")
	b.ReportMetric(float64(mover1.backup.uploaded)/(1<<20), "mover-stage1-upload-MiB")
	b.ReportMetric(float64(mover2.backup.uploaded)/(1<<20), "mover-stage2-upload-MiB")
	b.Logf("stage 1: mover copy %.1fs: backup process %.1fs (%.1fs in the backup itself), restore process %.1fs started with it (%.1fs restoring); %s backup %.1fs (%.1fs of it in init), restore %.1fs. "+
		"stage 2: mover copy %.1fs: backup %.1fs (%.1fs), restore %.1fs (%.1fs); restic backup %.1fs, restore %.1fs",
		mover1.wall, mover1.backup.seconds, mover1.backup.inner, mover1.restore.seconds, mover1.restore.inner, resticVersion, restic1.backup.seconds, restic1.backup.inner, restic1.restore.seconds,
		mover2.wall, mover2.backup.seconds, mover2.backup.inner, mover2.restore.seconds, mover2.restore.inner, restic2.backup.seconds, restic2.restore.seconds)
	fmt.Printf("BenchmarkMoverVsRestic: %.0f MiB (%d files, %d of them large), S3 on loopback (versitygw), processes with fresh work/cache folders: "+
		"stage 1 backup+restore (the mover's restore process started with its backup, as kube.copyVolumes does): mover %.0f MiB/s vs %s %.0f MiB/s: ratio %.2fx (target ≥ 0.8x); "+
		"stage 2 after 1 %% changed: mover %.1fs vs %.1fs at stage 1: %.2f of stage 1, speedup %.1fx (target ≥ 10x) (restic %.2f of its stage 1: its restore rewrites every file); "+
		"peak RSS at %d / %d MiB: mover backup %.0f / %.0f MiB, restore %.0f / %.0f MiB; restic backup %.0f / %.0f MiB, restore %.0f / %.0f MiB\n",
		mib, sum.Files, len(benchSpec(mb).Large), moverMiBps, resticVersion, resticMiBps, ratio,
		secs(mover2), secs(mover1), secs(mover2)/secs(mover1), speedup, secs(restic2)/secs(restic1),
		mb/4, mb, moverQ.backup.rss, mover1.backup.rss, moverQ.restore.rss, mover1.restore.rss,
		resticQ.backup.rss, restic1.backup.rss, resticQ.restore.rss, restic1.restore.rss)
}

// buildPlanrun builds the planrun binary into dir, as the mover pods run it.
func buildPlanrun(b *testing.B, dir string) string {
	b.Helper()
	bin := filepath.Join(dir, "planrun")
	out, err := exec.Command("go", "build", "-o", bin, "planrun.dev/planrun/cmd/planrun").CombinedOutput()
	if err != nil {
		b.Fatalf("go build ./cmd/planrun: %v\n%s", err, out)
	}
	return bin
}

// volumeBench runs the mover and restic as processes against one S3 server.
type volumeBench struct {
	b               *testing.B
	root            string
	planrun, restic string
	srv             *s3test.Server
	creds           string
	n               int // folders made
	handoffs        int // mover copies made
}

// run is what one process did.
type run struct {
	seconds float64
	rss     float64 // peak RSS, MiB
	// inner is, for the mover, the seconds its result reports (the backup or restore itself,
	// without starting and connecting to the repository); for restic's first backup, its init.
	inner float64
	// The mover's result: the snapshot made, bytes read and uploaded by a backup; files written
	// and entries deleted by a restore.
	snapshot         string
	read, uploaded   int64
	written, deleted int64
}

// dir returns a new folder path (not created) under the benchmark's root.
func (t *volumeBench) dir(name string) string {
	t.n++
	return filepath.Join(t.root, fmt.Sprintf("%s-%d", name, t.n))
}

// workdir makes a fresh, empty folder: a new pod's emptyDir, a new restic cache.
func (t *volumeBench) workdir() string {
	d := t.dir("work")
	if err := os.Mkdir(d, 0o700); err != nil {
		t.b.Fatal(err)
	}
	return d
}

// exec runs a process and returns its wall time, peak RSS and stdout; it fails the benchmark
// when the process fails. What earlier steps left to write back to disk (the generated trees,
// restic's restores, which do not sync) is synced first, out of the time measured: the mover's
// restore syncs its file system at the end, and would pay for it.
func (t *volumeBench) exec(env []string, dir, bin string, args ...string) (run, []byte) {
	t.b.Helper()
	t.sync()
	return t.start(env, dir, bin, args...).wait()
}

// sync writes back what earlier steps left in the page cache, out of the time measured.
func (t *volumeBench) sync() {
	t.b.StopTimer()
	syscall.Sync()
	t.b.StartTimer()
}

// proc is a process started by start.
type proc struct {
	t              *volumeBench
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	start          time.Time
}

func (t *volumeBench) start(env []string, dir, bin string, args ...string) *proc {
	t.b.Helper()
	p := &proc{t: t, cmd: exec.Command(bin, args...)}
	p.cmd.Env, p.cmd.Dir = env, dir
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.start = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.b.Fatalf("%s: %v", bin, err)
	}
	return p
}

// wait waits for the process to end and returns its wall time, peak RSS and stdout; it fails
// the benchmark when the process fails.
func (p *proc) wait() (run, []byte) {
	p.t.b.Helper()
	if err := p.cmd.Wait(); err != nil {
		p.t.b.Fatalf("%s %s: %v\n%s\n%s", filepath.Base(p.cmd.Path), strings.Join(p.cmd.Args[1:], " "), err, tail(p.stdout.String()), tail(p.stderr.String()))
	}
	elapsed := time.Since(p.start)
	rss := float64(p.cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss) / 1024 // KiB on Linux
	return run{seconds: elapsed.Seconds(), rss: rss}, p.stdout.Bytes()
}

func tail(s string) string {
	if len(s) > 4000 {
		return "…" + s[len(s)-4000:]
	}
	return s
}

// moverEnv is the environment of the mover processes: the default password, keys only from
// --credentials-dir.
func moverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "PLANRUN_MOVER_PASSWORD=") {
			env = append(env, kv)
		}
	}
	return env
}

// copyRun is one stage of a copy: its backup and its restore, and the wall time of both.
type copyRun struct {
	backup, restore run
	// wall is, for the mover, the time from starting both processes to the restore's end;
	// 0 for restic, whose restore starts after its backup.
	wall float64
}

func (c copyRun) secs() float64 {
	if c.wall > 0 {
		return c.wall
	}
	return c.backup.seconds + c.restore.seconds
}

// benchSource is the volume's identity across stages.
const benchSource = "bench-cluster/bench/data"

// moverArgs are the arguments of `planrun mover ACTION` on the repository at prefix of the bench
// bucket.
func (t *volumeBench) moverArgs(prefix, action string, args ...string) []string {
	return append([]string{"mover", action, "--repository", t.srv.URL("bench", prefix), "--credentials-dir", t.creds, "--workdir", t.workdir()}, args...)
}

// moverCopy copies src into dst as kube.copyVolumes does: the restore process starts with the
// backup (as the step starts the target's pod beside the source's) and waits for the snapshot
// the backup hands off.
func (t *volumeBench) moverCopy(prefix, src, dst string) copyRun {
	t.b.Helper()
	t.handoffs++
	handoff := fmt.Sprintf("copy-%d", t.handoffs)
	t.sync()
	start := time.Now()
	rp := t.start(moverEnv(), "", t.planrun, t.moverArgs(prefix, "restore", "--dir", dst, "--source", benchSource, "--handoff", handoff, "--wait", "30m")...)
	var c copyRun
	var out []byte
	c.backup, out = t.start(moverEnv(), "", t.planrun, t.moverArgs(prefix, "backup", "--dir", src, "--source", benchSource, "--stage", "--handoff", handoff)...).wait()
	bres, ok := lastEvent(t.b, out).(*BackupResult)
	if !ok {
		t.b.Fatalf("planrun mover backup ended with %s", out)
	}
	if bres.Warnings > 0 {
		t.b.Fatalf("planrun mover backup: %d warnings", bres.Warnings)
	}
	c.backup.snapshot, c.backup.read, c.backup.uploaded, c.backup.inner = bres.Snapshot, bres.HashedBytes, bres.UploadedBytes, bres.Seconds
	c.restore, out = rp.wait()
	c.wall = time.Since(start).Seconds()
	rres, ok := lastEvent(t.b, out).(*RestoreResult)
	if !ok || rres.Snapshot != bres.Snapshot {
		t.b.Fatalf("planrun mover restore ended with %s; want the backup's snapshot %s", out, bres.Snapshot)
	}
	c.restore.written, c.restore.deleted, c.restore.inner = rres.WrittenFiles, rres.Deleted, rres.Seconds
	return c
}

// lastEvent parses a mover's last line of output.
func lastEvent(b *testing.B, out []byte) Event {
	b.Helper()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	ev, err := ParseEvent([]byte(lines[len(lines)-1]))
	if err != nil {
		b.Fatalf("planrun mover: last line %q: %v", lines[len(lines)-1], err)
	}
	return ev
}

// resticEnv is restic's environment: the server's keys, a password.
func (t *volumeBench) resticEnv() []string {
	env := []string{"RESTIC_PASSWORD=planrun-bench", "AWS_ACCESS_KEY_ID=" + t.srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + t.srv.SecretKey}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "RESTIC_") {
			env = append(env, kv)
		}
	}
	return env
}

// resticArgs are the arguments every restic command takes: the repository (path-style
// addressing: the server is an IP address), a fresh cache.
func (t *volumeBench) resticArgs(prefix string, args ...string) []string {
	return append([]string{"-r", "s3:" + t.srv.Endpoint + "/bench/" + prefix, "-o", "s3.bucket-lookup=path", "--cache-dir", t.workdir()}, args...)
}

// resticBackup backs up src as "." from inside it, so that the snapshot's root is src's content
// and restore --target writes it there (not under the absolute path). init creates the
// repository first, in the time measured.
func (t *volumeBench) resticBackup(prefix, src string, init bool) run {
	t.b.Helper()
	var r run
	if init {
		r, _ = t.exec(t.resticEnv(), src, t.restic, t.resticArgs(prefix, "init")...)
		r.inner = r.seconds
	}
	rb, out := t.exec(t.resticEnv(), src, t.restic, t.resticArgs(prefix, "backup", "--json", ".")...)
	r.seconds += rb.seconds
	r.rss = max(r.rss, rb.rss)
	// The last line is the summary.
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var summary struct {
		MessageType string `json:"message_type"`
		DataAdded   int64  `json:"data_added"`
		Processed   int64  `json:"total_bytes_processed"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &summary); err != nil || summary.MessageType != "summary" {
		t.b.Fatalf("restic backup: last line %q (%v)", lines[len(lines)-1], err)
	}
	r.uploaded = summary.DataAdded
	return r
}

func (t *volumeBench) resticRestore(prefix, dst string) run {
	t.b.Helper()
	r, _ := t.exec(t.resticEnv(), "", t.restic, t.resticArgs(prefix, "restore", "latest", "--target", dst)...)
	return r
}

func (t *volumeBench) tree(dir string) fstree.Tree {
	t.b.Helper()
	tree, err := fstree.Snapshot(dir)
	if err != nil {
		t.b.Fatal(err)
	}
	return tree
}

// same fails the benchmark when dir is not a copy of want. Restic's copies are compared without
// their root: restic restores the content of the folder it backed up, not the metadata (mode,
// mtime) of the --target folder itself.
func (t *volumeBench) same(what string, want fstree.Tree, dir string) {
	t.b.Helper()
	got := t.tree(dir)
	if strings.HasPrefix(what, "restic") {
		got["."] = want["."]
	}
	if d := fstree.Diff(want, got); len(d) > 0 {
		if len(d) > 20 {
			d = append(d[:20], fmt.Sprintf("… and %d more", len(d)-20))
		}
		t.b.Fatalf("%s: the copy differs from its source:\n%s", what, strings.Join(d, "\n"))
	}
}
