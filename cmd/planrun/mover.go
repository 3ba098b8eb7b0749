package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"planrun.dev/planrun/steps/mover"
	"planrun.dev/planrun/steps/storage"
)

// moverFlags are the flags of planrun mover, which runs inside the mover pods that
// kube.copyVolumes and kube.verifyVolumes start (see steps/mover for what it does).
type moverFlags struct {
	dir, repository, source, snapshot, handoff, workdir, credentialsDir string
	stage, verify                                                       bool
	wait                                                                time.Duration
}

// maxTerminationMessage is what Kubernetes keeps of a termination message.
const maxTerminationMessage = 4096

// terminationLog is where Kubernetes reads a container's termination message: the step takes
// the result from the pod's status, which outlives the pod's logs.
const terminationLog = "/dev/termination-log"

// moverPasswordEnv holds the repository's password in the pod (from a Secret); unset or empty
// is mover.DefaultPassword.
const moverPasswordEnv = "PLANRUN_MOVER_PASSWORD"

var moverCommand = &command{
	name:    "mover",
	usage:   "backup|restore|verify --dir DIR --repository URL (--source ID [--handoff NAME] | --snapshot ID | --source ID --handoff NAME [--wait DUR]) [--stage] [--verify] [--workdir DIR] [--credentials-dir DIR]",
	summary: "Copy a volume's files to or from a repository (run by kube.copyVolumes in mover pods); prints JSON lines.",
	flags: func(fs *pflag.FlagSet, a *app) {
		m := &a.mover
		fs.StringVar(&m.dir, "dir", "", "The volume's folder (the mounted claim)")
		fs.StringVar(&m.repository, "repository", "", "Where the repository is: a folder, file:///, s3://, gs://, azblob://")
		fs.StringVar(&m.source, "source", "", "backup: the volume's identity across stages, CLUSTER-UID/NAMESPACE/CLAIM")
		fs.StringVar(&m.snapshot, "snapshot", "", "restore, verify: the snapshot a backup made")
		fs.StringVar(&m.handoff, "handoff", "", "backup: a name for the snapshot, for a restore that waits for it; restore (with --source, instead of --snapshot): wait for the complete snapshot of that name")
		fs.DurationVar(&m.wait, "wait", time.Hour, "restore --handoff: how long to wait for the snapshot")
		fs.BoolVar(&m.stage, "stage", false, "backup: the application runs; files that change or vanish while read are warnings, not errors")
		fs.BoolVar(&m.verify, "verify", false, "restore: read every file back and compare it with the snapshot's checksums")
		fs.StringVar(&m.workdir, "workdir", "", "Folder for the repository's configuration and caches (default: a temporary folder)")
		fs.StringVar(&m.credentialsDir, "credentials-dir", "", "A mounted Secret with the repository's credentials, one file per key (default: the provider's own chain)")
	},
	run: func(ctx context.Context, a *app, args []string) error {
		if len(args) != 1 {
			return usagef("mover takes one action: backup, restore or verify")
		}
		m := a.mover
		action := args[0]
		if err := m.check(action); err != nil {
			return err
		}
		emit := mover.JSONLines(a.stdout)
		result, err := m.run(mover.WithKopiaLog(ctx, a.logger), action, emit, a.logger)
		if err != nil {
			emit(mover.FailureOf(err))
			writeTerminationMessage(mover.FailureOf(err))
			return err
		}
		emit(result)
		writeTerminationMessage(result)
		return nil
	},
}

// check refuses flags that do not fit action, before anything is opened.
func (m moverFlags) check(action string) error {
	switch action {
	case "backup":
		if m.source == "" {
			return usagef("mover backup needs --source")
		}
		if m.snapshot != "" || m.verify {
			return usagef("mover backup takes no --snapshot or --verify")
		}
	case "restore":
		if (m.snapshot == "") == (m.handoff == "") {
			return usagef("mover restore needs --snapshot, or --source and --handoff (not both)")
		}
		if (m.source == "") != (m.handoff == "") {
			return usagef("mover restore --handoff needs --source (and --source goes only with --handoff)")
		}
		if m.wait <= 0 {
			return usagef("--wait: %v is not a positive duration", m.wait)
		}
		if m.stage {
			return usagef("mover restore takes no --stage")
		}
	case "verify":
		if m.snapshot == "" {
			return usagef("mover verify needs --snapshot")
		}
		if m.source != "" || m.handoff != "" || m.stage {
			return usagef("mover verify takes no --source, --handoff or --stage")
		}
		if action == "verify" && m.verify {
			return usagef("mover verify always verifies: no --verify")
		}
	default:
		return usagef("mover: unknown action %q: want backup, restore or verify", action)
	}
	if m.dir == "" || m.repository == "" {
		return usagef("mover %s needs --dir and --repository", action)
	}
	if err := storage.Check(m.repository); err != nil {
		return usagef("--repository: %v", err)
	}
	return nil
}

func (m moverFlags) run(ctx context.Context, action string, emit func(mover.Event), logger *slog.Logger) (mover.Event, error) {
	creds, err := readCredentialsDir(m.credentialsDir)
	if err != nil {
		return nil, err
	}
	loc, err := storage.Open(ctx, m.repository, creds)
	if err != nil {
		return nil, err
	}
	defer loc.Close()
	opts := mover.RepositoryOptions{
		Password: os.Getenv(moverPasswordEnv),
		WorkDir:  m.workdir,
		ReadOnly: action != "backup",
		Logger:   logger,
	}
	// A restore handed off by a backup waits for it, from the first connect on: the first
	// backup of a repository creates it.
	waitCtx, cancelWait := context.WithTimeout(ctx, m.wait)
	defer cancelWait()
	var rep *mover.Repository
	if action == "restore" && m.handoff != "" {
		rep, err = mover.ConnectWaiting(waitCtx, loc, opts)
	} else {
		rep, err = mover.ConnectRepository(ctx, loc, opts)
	}
	if err != nil {
		return nil, err
	}
	defer rep.Close(context.WithoutCancel(ctx))
	switch action {
	case "backup":
		res, err := mover.Backup(ctx, rep, mover.BackupOptions{Dir: m.dir, SourceID: m.source, Stage: m.stage, Handoff: m.handoff, Events: emit})
		return &res, err
	case "restore":
		snapshot := m.snapshot
		if m.handoff != "" {
			if snapshot, err = mover.WaitForSnapshot(waitCtx, rep, m.source, m.handoff); err != nil {
				return nil, err
			}
		}
		res, err := mover.Restore(ctx, rep, mover.RestoreOptions{Dir: m.dir, Snapshot: snapshot, Verify: m.verify, Events: emit})
		return &res, err
	default:
		res, err := mover.Verify(ctx, rep, mover.VerifyOptions{Dir: m.dir, Snapshot: m.snapshot, Events: emit})
		return &res, err
	}
}

// readCredentialsDir reads a Secret mounted as a folder: one file per key. The kubelet's own
// entries (..data, ..2026_…) and anything that is not a regular file behind its link are
// skipped. "" is no Secret: the provider's default chain.
func readCredentialsDir(dir string) (*storage.Credentials, error) {
	if dir == "" {
		return nil, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("--credentials-dir: %w", err)
	}
	data := map[string][]byte{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		info, err := os.Stat(p)
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		if info.Size() > maxCredentialBytes {
			return nil, fmt.Errorf("--credentials-dir: %s is %d bytes, more than a credential (%d)", p, info.Size(), maxCredentialBytes)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("--credentials-dir: %w", err)
		}
		data[e.Name()] = b
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("--credentials-dir: %s: no keys", dir)
	}
	return storage.NewCredentials("the Secret mounted at "+dir, data), nil
}

// maxCredentialBytes bounds one key of a credentials Secret (Kubernetes bounds a Secret to 1 MiB).
const maxCredentialBytes = 1 << 20

// writeTerminationMessage leaves e where Kubernetes keeps it in the pod's status, when running in
// a container that has the file.
func writeTerminationMessage(e mover.Event) {
	f, err := os.OpenFile(terminationLog, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return // not in a container
	}
	defer f.Close()
	_, _ = f.Write(terminationMessage(e))
}

// terminationMessage is e as one JSON line of at most maxTerminationMessage bytes: a failure's
// message (ten long paths) is cut, its start says what failed; results are far smaller.
func terminationMessage(e mover.Event) []byte {
	b, err := mover.MarshalEvent(e)
	if err != nil {
		return nil
	}
	if f, ok := e.(*mover.Failure); ok && len(b) > maxTerminationMessage {
		const ellipsis = " …"
		keep := max(0, len(f.Message)-(len(b)-maxTerminationMessage)-len(ellipsis)-8) // 8: room for escapes
		cut := &mover.Failure{Message: strings.ToValidUTF8(f.Message[:keep], "") + ellipsis}
		b, _ = mover.MarshalEvent(cut)
	}
	return b
}
