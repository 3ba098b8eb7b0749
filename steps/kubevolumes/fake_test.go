package kubevolumes_test

// fakeMover stands in for `planrun mover` in the busybox image, so that the steps' side (pods,
// scheduling, logs, progress, results, resume, cleanup, undo) is tested whatever the mover does.
// It speaks the mover's protocol (JSON lines, the last result or error also in
// /dev/termination-log) and behaves by a mode the test writes into the source claim, in the file
// .fake-mode, which the backup passes to the restore inside the snapshot id
// (fake.MODE.FILES.BYTES.RANDOM):
//
//	normal        copy at once
//	warn          the backup warns about two files
//	slow-backup   the backup reports progress for 15 s before it ends
//	slow-restore  the first restore pod into a claim reports progress and sleeps for 5 min (a
//	              test deletes it); the next one finishes
//	fail-restore  the restore fails with a one-line error
//
// The first line of its output (not an event) is its arguments, for the tests to read in the
// kept log. The backup fails if it can write to the claim (it must be mounted read-only); the
// restore writes .restored-from (the snapshot) into the target claim; verify fails when the
// claim holds a file named corrupt.
var fakeMover = []string{"sh", "-c", fakeScript, "fake-mover"}

const fakeScript = `
echo "args: $*"
role=$2; shift 2
snap=""; src=""; stage=false; verify=false
while [ $# -gt 0 ]; do
  case "$1" in
    --snapshot) snap=$2; shift;;
    --source) src=$2; shift;;
    --stage) stage=true;;
    --verify) verify=true;;
  esac
  shift
done
end() { echo "$1"; echo "$1" > /dev/termination-log; }
case $role in
backup)
  if touch /data/.probe 2>/dev/null; then end '{"event":"error","message":"the source claim is writable"}'; exit 1; fi
  mode=$(cat /data/.fake-mode 2>/dev/null || echo normal)
  files=$(find /data -type f | wc -l)
  bytes=$(find /data -type f -exec cat {} + | wc -c)
  echo "{\"event\":\"progress\",\"phase\":\"backup\",\"files\":0,\"filesTotal\":$files,\"bytes\":0,\"bytesTotal\":$bytes}"
  if [ "$mode" = slow-backup ]; then
    i=0; while [ $i -lt 30 ]; do
      echo "{\"event\":\"progress\",\"phase\":\"backup\",\"files\":0,\"filesTotal\":$files,\"bytes\":$i,\"bytesTotal\":$bytes}"
      sleep 0.5; i=$((i+1))
    done
  fi
  warnings=0
  if [ "$mode" = warn ]; then
    echo '{"event":"warning","path":"a.txt","message":"changed while read"}'
    echo '{"event":"warning","path":"b.txt","message":"vanished while read"}'
    warnings=2
  fi
  echo "{\"event\":\"progress\",\"phase\":\"backup\",\"files\":$files,\"filesTotal\":$files,\"bytes\":$bytes,\"bytesTotal\":$bytes}"
  end "{\"event\":\"result\",\"phase\":\"backup\",\"snapshot\":\"fake.$mode.$files.$bytes.$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')\",\"files\":$files,\"dirs\":1,\"bytes\":$bytes,\"hashedBytes\":$bytes,\"uploadedBytes\":$((bytes/2)),\"warnings\":$warnings,\"seconds\":0.25}"
  ;;
restore)
  mode=$(echo "$snap" | cut -d. -f2); files=$(echo "$snap" | cut -d. -f3); bytes=$(echo "$snap" | cut -d. -f4)
  if [ "$mode" = fail-restore ]; then end '{"event":"error","message":"no space left on device writing big.bin"}'; exit 1; fi
  if [ "$mode" = slow-restore ] && [ ! -e /data/.attempt ]; then
    touch /data/.attempt
    while true; do echo "{\"event\":\"progress\",\"phase\":\"restore\",\"files\":1,\"filesTotal\":$files,\"bytes\":1,\"bytesTotal\":$bytes}"; sleep 0.5; done
  fi
  echo "$snap" > /data/.restored-from
  echo "{\"event\":\"progress\",\"phase\":\"restore\",\"files\":$files,\"filesTotal\":$files,\"bytes\":$bytes,\"bytesTotal\":$bytes}"
  end "{\"event\":\"result\",\"phase\":\"restore\",\"snapshot\":\"$snap\",\"files\":$files,\"bytes\":$bytes,\"writtenFiles\":$files,\"writtenBytes\":$bytes,\"deleted\":0,\"verified\":$verify,\"seconds\":0.5}"
  ;;
verify)
  if [ -e /data/corrupt ]; then end "{\"event\":\"error\",\"message\":\"1 file differs from snapshot $snap: corrupt (sha256)\"}"; exit 1; fi
  end "{\"event\":\"result\",\"phase\":\"verify\",\"snapshot\":\"$snap\",\"files\":3,\"bytes\":30,\"seconds\":0.1}"
  ;;
*) echo "unknown role $role" >&2; exit 2;;
esac
`
