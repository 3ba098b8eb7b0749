package kubevolumes

// The mover's side of the contract, as the steps read it: `planrun mover backup|restore|verify`
// prints one JSON object per line on stdout, and writes its last result (or error) to
// /dev/termination-log. To be replaced by steps/mover's own types once that package is merged.

// The values of event.Event.
const (
	eventProgress = "progress"
	eventWarning  = "warning"
	eventResult   = "result"
	eventError    = "error"
)

// The mover's subcommands, which are also the phases of its events.
const (
	phaseBackup  = "backup"
	phaseRestore = "restore"
	phaseVerify  = "verify"
)

// event is one line of the mover's output: the fields of every event type in one struct.
type event struct {
	Event string `json:"event"`
	Phase string `json:"phase,omitempty"`

	// progress
	FilesTotal      int64 `json:"filesTotal,omitempty"`
	BytesTotal      int64 `json:"bytesTotal,omitempty"`
	DownloadedBytes int64 `json:"downloadedBytes,omitempty"`

	// warning; Message is also an error's
	Path    string `json:"path,omitempty"`
	Message string `json:"message,omitempty"`

	// progress and result
	Files         int64 `json:"files,omitempty"`
	Bytes         int64 `json:"bytes,omitempty"`
	UploadedBytes int64 `json:"uploadedBytes,omitempty"`

	// result
	Snapshot     string  `json:"snapshot,omitempty"`
	Dirs         int64   `json:"dirs,omitempty"`
	HashedBytes  int64   `json:"hashedBytes,omitempty"`
	CachedFiles  int64   `json:"cachedFiles,omitempty"`
	Warnings     int64   `json:"warnings,omitempty"`
	WrittenFiles int64   `json:"writtenFiles,omitempty"`
	WrittenBytes int64   `json:"writtenBytes,omitempty"`
	SkippedFiles int64   `json:"skippedFiles,omitempty"`
	Deleted      int64   `json:"deleted,omitempty"`
	Verified     bool    `json:"verified,omitempty"`
	Seconds      float64 `json:"seconds,omitempty"`
}
