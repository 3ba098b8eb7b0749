package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/controlplane"
)

// chromium is Debian's Chromium, which hack/install-browser.sh installs (make test runs it).
const chromium = "/usr/bin/chromium"

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// holdFinalizer keeps a deleted CRD until the test lets it go: the plan's remove-old-crds step
// waits for the CRDs to be gone, and so waits as long as the test wants, with progress.
const holdFinalizer = "test.planrun.dev/hold"

// TestConsoleInBrowser: the shipped Service Catalog migration runs against a local cluster from
// another process; headless Chromium opens the console, sees the step that waits for the old
// CRDs running with its progress bar advancing as they go, cancels the run (it stops at a safe
// point), resumes it (it finishes), and the journal says who did what. A request without the
// token is refused. Screenshots are test artifacts (go test -artifacts); with
// PLANRUN_UPDATE_SCREENSHOT=1 the run page's becomes the README's docs/console.png.
func TestConsoleInBrowser(t *testing.T) {
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("%s: %v (hack/install-browser.sh installs it)", chromium, err)
	}
	cp := controlplane.StartForTest(t, controlplane.WithControllers())
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	kubectl := func(args ...string) {
		t.Helper()
		cmd := exec.Command(filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"), append([]string{"--kubeconfig", cp.Kubeconfig}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// The small catalog of make demo: the old API stood in by CRDs, and its objects.
	kubectl("apply", "--server-side", "-f", "../../testdata/servicecatalog/old-api.yaml")
	kubectl("wait", "--for=condition=Established", "crd", "-l", "planrun.dev/stand-in=old-service-catalog-apiserver", "--timeout=60s")
	kubectl("apply", "--server-side", "-f", "../../testdata/servicecatalog/demo.yaml")
	crds, err := dyn.Resource(crdGVR).List(t.Context(), metav1.ListOptions{LabelSelector: "planrun.dev/stand-in=old-service-catalog-apiserver"})
	if err != nil || len(crds.Items) != 8 {
		t.Fatalf("old CRDs: %v (%d)", err, len(crds.Items))
	}
	// The step deletes and waits in list order: holding the 1st, 3rd and 5th makes it report
	// 2, then 4 of 8 gone as the test lets them go.
	var held []string
	for i, c := range crds.Items {
		if i%2 == 0 && i < 6 {
			setFinalizer(t, dyn, c.GetName(), true)
			held = append(held, c.GetName())
		}
	}
	t.Cleanup(func() {
		for _, n := range held {
			setFinalizer(t, dyn, n, false)
		}
	})

	dir := t.TempDir()
	state := filepath.Join(dir, "runs")
	runner := exec.Command(planrunBin, "apply", "../../plans/service-catalog-to-crds.yaml", "--run-id", "sc", "--state-dir", state,
		"--kubeconfig", cp.Kubeconfig, "--set", "newCRDs=../../testdata/servicecatalog/new-crds.yaml",
		"--set", "oldCRDSelector=planrun.dev/stand-in=old-service-catalog-apiserver", "--set", "apiService=",
		"--set", "backupDir="+filepath.Join(dir, "backup"))
	runner.Env = append(os.Environ(), "PLANRUN_ACTOR=alice")
	var runnerOut strings.Builder
	runner.Stdout, runner.Stderr = &runnerOut, &runnerOut
	if err := runner.Start(); err != nil {
		t.Fatal(err)
	}
	defer runner.Process.Kill()

	url := startUI(t, state, cp.Kubeconfig)
	shots := t.ArtifactDir()

	alloc, cancelAlloc := chromedp.NewExecAllocator(t.Context(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.WindowSize(1280, 1000),
		chromedp.UserDataDir(filepath.Join(dir, "chromium")), chromedp.Flag("disable-dev-shm-usage", true))...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	// The first action starts the browser, with no timeout: it lives as long as browser.
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("starting %s: %v", chromium, err)
	}
	do := func(what string, timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := context.WithTimeout(browser, timeout)
		defer cancel()
		if err := chromedp.Do(ctx, actions...); err != nil {
			page, _ := chromedp.Run(browser, chromedp.Text(chromedp.CSS("body")))
			t.Fatalf("%s: %v\nthe page says:\n%s\nthe runner says:\n%s", what, err, page, runnerOut.String())
		}
	}
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			png, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(shots, name), png, 0o644)
		})
	}
	// waitJS polls a JavaScript condition on the page as it updates itself (no reload).
	// A page being replaced (a click that navigates) has no context to evaluate in for a
	// moment: that is not the answer, so it asks again.
	waitJS := func(cond string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			expr := "!!(" + cond + ")"
			for {
				ok, err := chromedp.Evaluate[bool](expr)(ctx, tg)
				if err == nil && ok {
					return nil
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("waiting for %s: %w (last: %v)", cond, ctx.Err(), err)
				case <-time.After(100 * time.Millisecond):
				}
			}
		})
	}
	release := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(context.Context, *chromedp.Target) error {
			setFinalizer(t, dyn, name, false)
			return nil
		})
	}
	barValue := `(document.getElementById("bar-remove-old-crds") || {}).value`

	// Without the token: refused.
	base := url[:strings.Index(url, "?")]
	do("open without the token", 30*time.Second, chromedp.Navigate(base+"runs"))
	refused, _ := chromedp.Run(browser, chromedp.Text(chromedp.CSS("body")))
	if !strings.Contains(refused, "401 unauthorized") {
		t.Fatalf("without the token the console says %q", refused)
	}

	do("the runs list", time.Minute,
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.CSS(`a[href="/runs/sc"]`)),
		shot("runs.png"),
		chromedp.Click(chromedp.CSS(`a[href="/runs/sc"]`)),
		waitJS(`document.querySelector("#step-remove-old-crds .badge")?.textContent == "Running"`),
	)
	do("the first CRDs go", time.Minute, release(held[0]), waitJS(barValue+` == 2`))
	do("progress advances", time.Minute, release(held[1]), waitJS(barValue+` == 4`), waitJS(`document.querySelector("#progress-remove-old-crds .figures").textContent.includes("4/8 objects gone")`), shot("run-progress.png"))
	if os.Getenv("PLANRUN_UPDATE_SCREENSHOT") != "" {
		png, err := chromedp.Run(browser, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("../../docs/console.png", png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	do("cancel", time.Minute,
		chromedp.Click(chromedp.CSS(`#action-cancel`)),
		chromedp.WaitVisible(chromedp.CSS(`#confirm-cancel`)),
		chromedp.SetValue(chromedp.CSS(`input[name="by"]`), "Bob"),
		shot("confirm-cancel.png"),
		chromedp.Click(chromedp.CSS(`#confirm-cancel`)),
		waitJS(`document.querySelector("#run-status")?.textContent.includes("Interrupted")`),
		waitJS(`document.getElementById("action-resume") != null`),
		shot("cancelled.png"),
	)
	var ee *exec.ExitError
	if err := runner.Wait(); !errors.As(err, &ee) || ee.ExitCode() != exitInterrupted {
		t.Fatalf("the runner ended with %v, want exit %d\n%s", err, exitInterrupted, runnerOut.String())
	}
	j, err := engine.NewDirStore(state).Load(t.Context(), "sc")
	if err != nil || j.Step("remove-old-crds").Status != engine.StepRunning || j.Step("restore").Status != engine.StepPending {
		t.Fatalf("after cancel: %v, journal %+v", err, j)
	}

	setFinalizer(t, dyn, held[2], false)
	held = nil
	do("resume", 3*time.Minute,
		chromedp.Click(chromedp.CSS(`#action-resume`)),
		chromedp.WaitVisible(chromedp.CSS(`#confirm-resume`)),
		chromedp.SetValue(chromedp.CSS(`input[name="by"]`), "Carol"),
		chromedp.Click(chromedp.CSS(`#confirm-resume`)),
		waitJS(`document.querySelector("#run-status")?.textContent.includes("Succeeded")`),
		// The step the run was stopped in went from running to succeeded, its bar gone.
		waitJS(`document.querySelector("#step-remove-old-crds .badge")?.textContent == "Succeeded"`),
		waitJS(`document.getElementById("bar-remove-old-crds") == null`),
		shot("succeeded.png"),
	)
	if got, status := runActions(t, engine.NewDirStore(state), "sc"); got != "apply:alice cancel:Bob (console of console-host) resume:Carol (console of console-host)" || status != engine.RunSucceeded {
		t.Fatalf("status %s, actions %q", status, got)
	}
	// The timeline shows remove-old-crds twice: the attempt cancelled, and the one that ended it.
	bars, err := chromedp.Run(browser, chromedp.Evaluate[int](`document.querySelectorAll("svg.timeline rect.o-interrupted").length`))
	if err != nil || bars < 1 {
		t.Errorf("the timeline shows no interrupted attempt")
	}
}

// startUI starts planrun ui on a free loopback port and returns the URL it prints.
func startUI(t *testing.T, state, kubeconfig string) string {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("browser-test-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ui := exec.Command(planrunBin, "ui", "--listen", "127.0.0.1:0", "--token-file", tokenFile, "--state-dir", state, "--kubeconfig", kubeconfig)
	ui.Env = append(os.Environ(), "PLANRUN_ACTOR=console-host")
	stdout, err := ui.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	ui.Stderr = &stderr
	if err := ui.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ui.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- ui.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			ui.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	url, ok := strings.CutPrefix(strings.TrimSpace(line), "planrun console: ")
	if err != nil || !ok || !strings.Contains(url, "?token=browser-test-token-0123456789") {
		t.Fatalf("planrun ui printed %q (%v)\n%s", line, err, stderr.String())
	}
	go func() { _, _ = bufio.NewReader(stdout).WriteTo(discard{}) }()
	return url
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// setFinalizer adds or removes the test's hold on a CRD.
func setFinalizer(t *testing.T, dyn dynamic.Interface, name string, hold bool) {
	t.Helper()
	ctx := context.Background()
	for range 20 {
		c, err := dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return // gone: nothing holds it
		}
		var fins []string
		for _, f := range c.GetFinalizers() {
			if f != holdFinalizer {
				fins = append(fins, f)
			}
		}
		if hold {
			fins = append(fins, holdFinalizer)
		}
		c.SetFinalizers(fins)
		if _, err = dyn.Resource(crdGVR).Update(ctx, c, metav1.UpdateOptions{}); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond) // a conflict with the apiextensions controller
	}
	t.Errorf("could not %s the hold on CRD %s", map[bool]string{true: "set", false: "release"}[hold], name)
}
