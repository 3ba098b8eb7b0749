package engine

import (
	"gopkg.in/yaml.v3"
)

// APIVersion and Kind identify plan files.
const (
	APIVersion = "planrun.dev/v1alpha1"
	Kind       = "Plan"
)

// Plan is a loaded, validated plan. Build one with Load or Parse.
type Plan struct {
	APIVersion string               `yaml:"apiVersion" plan:"required" doc:"Always planrun.dev/v1alpha1."`
	Kind       string               `yaml:"kind" plan:"required" doc:"Always Plan."`
	Metadata   Metadata             `yaml:"metadata" plan:"required"`
	Params     map[string]*Param    `yaml:"params" doc:"Typed inputs, set with --set name=value or --values file.yaml."`
	Clusters   map[string]*Cluster  `yaml:"clusters" doc:"Named Kubernetes clusters the steps talk to."`
	Datastores map[string]yaml.Node `yaml:"datastores" doc:"Named datastores (etcd clusters) the steps talk to. An entry's type: picks its kind and may be left out while only one kind exists; ${{ }} values may use params."`
	Hooks      Hooks                `yaml:"hooks" doc:"Steps run around the steps of the Backup and Restore phases."`
	Steps      []*Step              `yaml:"steps" plan:"required" doc:"The steps, run in order."`

	// File is the path the plan was loaded from; Source its bytes; Digest the sha256 of Source.
	File   string `yaml:"-"`
	Source []byte `yaml:"-"`
	Digest string `yaml:"-"`
	// Values are the resolved param values (defaults, --values files, --set).
	Values map[string]any `yaml:"-"`

	paramValue any              // struct value of the params, for expressions
	datastores map[string]any   // decoded datastores entries, by name
	order      []*Step          // hooks and steps in execution order
	byID       map[string]*Step // every step, rollback steps included
}

// Metadata names and versions a plan.
type Metadata struct {
	Name        string `yaml:"name" plan:"required" doc:"Name of the plan; run ids start with it."`
	Version     int    `yaml:"version" doc:"Version of the plan, for humans and run records."`
	Description string `yaml:"description" doc:"What the plan does."`
}

// Param declares one input of a plan.
type Param struct {
	Type        string    `yaml:"type" doc:"string (default), int, bool, list or map."`
	Default     yaml.Node `yaml:"default" doc:"Value used when none is given."`
	Required    bool      `yaml:"required" doc:"The run refuses to start without a value."`
	Description string    `yaml:"description" doc:"What the param is for."`
}

// Cluster names a Kubernetes cluster. Empty fields fall back to --kubeconfig and --context, then
// to the current kubeconfig context.
type Cluster struct {
	Kubeconfig  string `yaml:"kubeconfig" doc:"Path of the kubeconfig file; ${{ }} may use params."`
	Context     string `yaml:"context" doc:"Context in the kubeconfig; ${{ }} may use params."`
	Description string `yaml:"description" doc:"What this cluster is in the migration."`
}

// Hooks are the four hook phases of CAM and Velero. Each is a list of ordinary steps run before
// the first or after the last step of its phase.
type Hooks struct {
	PreBackup   []*Step `yaml:"PreBackup" doc:"Run before the first step of phase Backup."`
	PostBackup  []*Step `yaml:"PostBackup" doc:"Run after the last step of phase Backup."`
	PreRestore  []*Step `yaml:"PreRestore" doc:"Run before the first step of phase Restore."`
	PostRestore []*Step `yaml:"PostRestore" doc:"Run after the last step of phase Restore."`
}

// Phases a step may belong to; hooks wrap them.
const (
	PhaseBackup  = "Backup"
	PhaseRestore = "Restore"
)

// OnError values.
const (
	OnErrorFail     = "fail"
	OnErrorContinue = "continue"
)

// Step is one step of a plan: a hook, a main step or a rollback step.
type Step struct {
	ID          string    `yaml:"id" plan:"required" doc:"Stable identity of the step: the key of checkpoints and resume."`
	Type        string    `yaml:"type" plan:"required" doc:"Registered step type."`
	Description string    `yaml:"description" doc:"What the step is for."`
	With        yaml.Node `yaml:"with" doc:"Config of the step type; values may hold ${{ }} expressions."`
	When        yaml.Node `yaml:"when" doc:"Expression; the step is skipped when it is false."`
	Phase       string    `yaml:"phase" doc:"Backup or Restore: hooks of that phase run around it."`
	Retry       *Retry    `yaml:"retry" doc:"How failed attempts are retried."`
	Timeout     Duration  `yaml:"timeout" doc:"Limit for one attempt, such as 30s or 10m."`
	OnError     string    `yaml:"onError" doc:"fail (default) stops the run; continue records the failure and goes on."`
	Rollback    []*Step   `yaml:"rollback" doc:"Steps that undo this one; run in order when the run is rolled back."`

	// Pos is where the step is written.
	Pos Pos `yaml:"-"`
	// Hook is the hook phase (PreBackup...) for hook steps, empty otherwise.
	Hook string `yaml:"-"`
	// Parent is the step a rollback step undoes, nil otherwise.
	Parent *Step `yaml:"-"`
	// Digest identifies what the step does (id, type, with, when, phase); resume refuses to
	// continue a run whose completed steps changed digest.
	Digest string `yaml:"-"`

	stepType  StepType
	action    Action                   // config decoded at load time, used when there are no templates
	templates map[*yaml.Node]*Template // ${{ }} scalars of With, filled in at run time
	exprs     map[*yaml.Node]*Expr     // bare expressions of With (fields of type Expr)
	when      *Expr
}

// Retry says how often and how patiently a failed attempt is retried.
type Retry struct {
	Attempts   int      `yaml:"attempts" doc:"Total attempts, the first included (default 1)."`
	Backoff    Duration `yaml:"backoff" doc:"Wait before the second attempt, doubled each time (default 1s)."`
	MaxBackoff Duration `yaml:"maxBackoff" doc:"Longest wait between attempts (default 1m)."`
	On         string   `yaml:"on" doc:"transient (default): retry only errors marked transient; any: retry every error."`
}

// Retry policies.
const (
	RetryOnTransient = "transient"
	RetryOnAny       = "any"
)

// Order returns hooks and main steps in the order they run.
func (p *Plan) Order() []*Step { return p.order }

// AllSteps returns every step: hooks and main steps in the order they run, then rollback steps.
func (p *Plan) AllSteps() []*Step { return p.allSteps() }

// DatastoreConfigs returns the plan's datastores as decoded when it loaded (params filled in),
// by name: tools that read a plan without running it (planrun rbac) use them.
func (p *Plan) DatastoreConfigs() map[string]any {
	out := make(map[string]any, len(p.datastores))
	for name, cfg := range p.datastores {
		out[name] = cfg
	}
	return out
}

// Config returns the step's config as decoded when the plan loaded. Fields that hold ${{ }}
// are zero in it, as only the run fills them in (templated says whether there are any), and
// Provision has not run on it then. Tools that read a plan without running it (planrun rbac) use
// it; it must not be run.
func (s *Step) Config() (a Action, templated bool) {
	if s.action == nil {
		return s.stepType.New(), true
	}
	return s.action, len(s.templates) > 0
}

// Step returns the step with the given id, rollback and hook steps included.
func (p *Plan) Step(id string) *Step { return p.byID[id] }

// Name of the plan.
func (p *Plan) Name() string { return p.Metadata.Name }
