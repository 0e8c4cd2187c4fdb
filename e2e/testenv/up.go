package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

const (
	serviceCIDR = "10.96.0.0/16"
	// advertiseAddress sits beside the fake node addresses (172.30.0.10+).
	advertiseAddress = "172.30.0.1"
	// startTimeout bounds the whole start-up; a healthy start takes seconds.
	startTimeout = 3 * time.Minute
)

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

type upOptions struct {
	dir     string
	nodes   int
	crdDirs []string
}

func parseUp(args []string) (*upOptions, error) {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	o := &upOptions{}
	var crdDirs stringList
	fs.StringVar(&o.dir, "dir", "", "state directory (etcd data, certificates, kubeconfigs, logs); required")
	fs.IntVar(&o.nodes, "nodes", 1, "number of fake nodes to register")
	fs.Var(&crdDirs, "crd-dir", "directory whose *.yaml/*.yml CRDs are installed before READY (repeatable)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if o.dir == "" {
		return nil, errors.New("--dir is required")
	}
	if o.nodes < 1 || o.nodes > 64 {
		return nil, errors.New("--nodes must be between 1 and 64")
	}
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return nil, err
	}
	o.dir = dir
	for _, d := range crdDirs {
		abs, err := filepath.Abs(d)
		if err != nil {
			return nil, err
		}
		o.crdDirs = append(o.crdDirs, abs)
	}
	return o, nil
}

// environment is a running control plane; shutdown stops it in reverse order.
type environment struct {
	etcd       *embed.Etcd
	apiserver  *child
	kcm        *child
	scheduler  *child
	stopAgent  context.CancelFunc
	stopGuard  func()
	shutdownMu sync.Once
}

func runUp(args []string) error {
	o, err := parseUp(args)
	if err != nil {
		return err
	}
	if err := lockDir(o.dir); err != nil {
		return err
	}
	if err := prepareDir(o.dir); err != nil {
		return err
	}
	if err := logToFile(filepath.Join(o.dir, "node.log")); err != nil {
		return err
	}
	crds, err := readCRDs(o.crdDirs) // fail on bad YAML before starting anything
	if err != nil {
		return err
	}

	sigCtx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stopSignals()

	env := &environment{}
	defer env.shutdown()

	kubeconfig, err := env.start(sigCtx, o, crds)
	if err != nil {
		if sigCtx.Err() != nil {
			return nil // interrupted during start-up: not an error
		}
		return err
	}
	klog.InfoS("environment ready", "kubeconfig", kubeconfig)
	fmt.Printf("READY %s\n", kubeconfig)

	select {
	case <-sigCtx.Done():
		klog.InfoS("signal received, shutting down")
		return nil
	case <-env.apiserver.done:
		return exitError(env.apiserver)
	case <-env.kcm.done:
		return exitError(env.kcm)
	case <-env.scheduler.done:
		return exitError(env.scheduler)
	case err := <-env.etcd.Err():
		return fmt.Errorf("etcd: %w", err)
	}
}

// lockDir takes an exclusive lock on dir for the life of the process, so a
// second `up` cannot wipe the state of a running environment. The kernel
// drops the lock when the process dies, however it dies.
func lockDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, "up.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("%s is in use by another testenv up", dir)
		}
		return err
	}
	lockFile = f // never closed: the lock lasts until the process exits
	return nil
}

// lockFile keeps the lock's descriptor reachable: an unreachable *os.File is
// closed by its finalizer, which would release the lock.
var lockFile *os.File

// prepareDir makes dir a fresh state directory. Every `up` starts an empty
// cluster: certificates and tokens are regenerated, so old etcd data (whose
// service-account tokens would no longer verify) is removed.
func prepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, p := range []string{"etcd", "pki", "kubeconfig", "controller-manager.kubeconfig",
		"scheduler.kubeconfig", "scheduler.yaml", "egress-selector.yaml", "egress.sock"} {
		if err := os.RemoveAll(filepath.Join(dir, p)); err != nil {
			return err
		}
	}
	return nil
}

// logToFile sends klog output of this process (node agent, CRD installer and
// start-up progress; client-go logs through klog too) to path, keeping stdout
// free for the READY line and stderr for fatal errors.
func logToFile(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	for k, v := range map[string]string{"logtostderr": "false", "alsologtostderr": "false",
		"stderrthreshold": "FATAL", "one_output": "true"} {
		if err := fs.Set(k, v); err != nil {
			return err
		}
	}
	klog.SetOutput(f)
	return nil
}

func (e *environment) start(sigCtx context.Context, o *upOptions, crds []*unstructured.Unstructured) (string, error) {
	ctx, cancel := context.WithTimeout(sigCtx, startTimeout)
	defer cancel()
	t0 := time.Now()
	dir := o.dir

	ports, err := freePorts(3)
	if err != nil {
		return "", err
	}
	etcdClient, etcdPeer, apiPort := ports[0], ports[1], ports[2]

	// The first address of the service range is the `kubernetes` Service.
	p, err := newPKI(filepath.Join(dir, "pki"), net.IPv4(10, 96, 0, 1))
	if err != nil {
		return "", fmt.Errorf("generate certificates: %w", err)
	}

	var etcdURL string
	e.etcd, etcdURL, err = startEtcd(filepath.Join(dir, "etcd"), filepath.Join(dir, "etcd.log"), etcdClient, etcdPeer)
	if err != nil {
		return "", err
	}
	klog.InfoS("etcd ready", "url", etcdURL, "elapsed", time.Since(t0))

	egressConfig, stopGuard, err := startEgressGuard(dir)
	if err != nil {
		return "", err
	}
	e.stopGuard = stopGuard

	server := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	e.apiserver, err = startChild("kube-apiserver", filepath.Join(dir, "apiserver.log"), []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiPort),
		// The address published as the `kubernetes` Service endpoint must not
		// be loopback (EndpointSlice validation). Nothing in the environment
		// dials it: clients use the kubeconfig's 127.0.0.1 address.
		"--advertise-address=" + advertiseAddress,
		"--cert-dir=" + p.dir,
		"--tls-cert-file=" + p.servingCert,
		"--tls-private-key-file=" + p.servingKey,
		"--client-ca-file=" + p.caCert,
		"--token-auth-file=" + p.tokenFile,
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.saPub,
		"--service-account-signing-key-file=" + p.saKey,
		"--service-cluster-ip-range=" + serviceCIDR,
		"--allow-privileged=true",
		"--egress-selector-config-file=" + egressConfig,
		"--profiling=false",
	})
	if err != nil {
		return "", err
	}

	caPool := x509.NewCertPool()
	caPool.AppendCertsFromPEM(p.caPEM)
	probe := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: caPool}}}
	if err := waitHTTP(ctx, probe, server+"/healthz", p.adminToken, e.apiserver); err != nil {
		return "", withLogTail(err, filepath.Join(dir, "apiserver.log"))
	}
	klog.InfoS("kube-apiserver healthy", "server", server, "elapsed", time.Since(t0))

	if err := e.startControllers(dir, server, p); err != nil {
		return "", err
	}

	cfg := restConfig(server, p.caPEM, p.adminToken)
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return "", err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return "", err
	}

	agent := newNodeAgent(client, o.nodes)
	agentCtx, stopAgent := context.WithCancel(context.Background())
	e.stopAgent = stopAgent

	// Independent start-up steps run concurrently; the slowest one (usually
	// the controller-manager creating the default ServiceAccount) sets READY.
	steps := map[string]func(context.Context) error{
		"nodes": func(ctx context.Context) error {
			if err := agent.registerNodes(ctx); err != nil {
				return err
			}
			go agent.renewLeases(agentCtx)
			if err := agent.runPods(agentCtx); err != nil {
				return err
			}
			return poll(ctx, func(ctx context.Context) (bool, error) { return agent.nodesReady(ctx) })
		},
		"crds": func(ctx context.Context) error {
			if len(crds) == 0 {
				return nil
			}
			klog.InfoS("installing CRDs", "count", len(crds), "names", crdNames(crds))
			return installCRDs(ctx, dyn, crds)
		},
		"readyz": func(ctx context.Context) error {
			return waitHTTP(ctx, probe, server+"/readyz", p.adminToken, e.apiserver)
		},
		"default ServiceAccount": func(ctx context.Context) error {
			return poll(ctx, func(ctx context.Context) (bool, error) {
				_, err := client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return false, nil
				}
				return err == nil, err
			})
		},
	}
	errc := make(chan error, len(steps))
	for name, step := range steps {
		go func() {
			if err := step(ctx); err != nil {
				errc <- fmt.Errorf("%s: %w", name, err)
				return
			}
			klog.InfoS("start-up step done", "step", name, "elapsed", time.Since(t0))
			errc <- nil
		}()
	}
	for range steps {
		select {
		case err := <-errc:
			if err != nil {
				return "", err
			}
		case <-e.kcm.done:
			return "", withLogTail(exitError(e.kcm), filepath.Join(dir, "controller-manager.log"))
		case <-e.scheduler.done:
			return "", withLogTail(exitError(e.scheduler), filepath.Join(dir, "scheduler.log"))
		}
	}

	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, server, p.caPEM, "admin", p.adminToken); err != nil {
		return "", err
	}
	return kubeconfig, nil
}

// startControllers runs kube-controller-manager and kube-scheduler, each with
// its own identity and kubeconfig.
func (e *environment) startControllers(dir, server string, p *pki) error {
	kcmConfig := filepath.Join(dir, "controller-manager.kubeconfig")
	if err := writeKubeconfig(kcmConfig, server, p.caPEM, "system:kube-controller-manager", p.kcmToken); err != nil {
		return err
	}
	schedKubeconfig := filepath.Join(dir, "scheduler.kubeconfig")
	if err := writeKubeconfig(schedKubeconfig, server, p.caPEM, "system:kube-scheduler", p.schedToken); err != nil {
		return err
	}
	// The scheduler's client limits are only settable in its config file.
	schedConfig := filepath.Join(dir, "scheduler.yaml")
	if err := os.WriteFile(schedConfig, []byte(fmt.Sprintf(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: %q
  qps: 200
  burst: 400
leaderElection:
  leaderElect: false
`, schedKubeconfig)), 0o600); err != nil {
		return err
	}

	var err error
	e.kcm, err = startChild("kube-controller-manager", filepath.Join(dir, "controller-manager.log"), []string{
		"--kubeconfig=" + kcmConfig,
		// The node-lifecycle controller would taint and evict the fake nodes,
		// which have no kubelet heartbeat of the kind it expects.
		"--controllers=*,-node-lifecycle-controller",
		"--service-account-private-key-file=" + p.saKey,
		"--root-ca-file=" + p.caCert,
		"--use-service-account-credentials=true",
		"--cluster-signing-cert-file=" + p.caCert,
		"--cluster-signing-key-file=" + p.caKey,
		"--service-cluster-ip-range=" + serviceCIDR,
		"--cluster-name=testenv",
		// One instance only: no leader election, so controllers start at once.
		"--leader-elect=false",
		// No serving endpoint: nothing scrapes it, and a fixed default port
		// would clash between environments.
		"--secure-port=0",
		"--kube-api-qps=200",
		"--kube-api-burst=400",
		"--profiling=false",
	})
	if err != nil {
		return err
	}
	e.scheduler, err = startChild("kube-scheduler", filepath.Join(dir, "scheduler.log"), []string{
		"--config=" + schedConfig,
		"--secure-port=0",
		"--profiling=false",
	})
	return err
}

// shutdown stops everything, newest first, within a few seconds.
func (e *environment) shutdown() {
	e.shutdownMu.Do(func() {
		if e.stopAgent != nil {
			e.stopAgent()
		}
		var wg sync.WaitGroup
		for _, c := range []*child{e.kcm, e.scheduler} {
			if c != nil {
				wg.Add(1)
				go func() { defer wg.Done(); c.stop(2 * time.Second) }()
			}
		}
		wg.Wait()
		e.apiserver.stop(4 * time.Second)
		if e.stopGuard != nil {
			e.stopGuard()
		}
		if e.etcd != nil {
			e.etcd.Close()
		}
		klog.InfoS("shut down")
		klog.Flush()
	})
}

// waitHTTP polls url until it answers 200, failing early if owner exits.
func waitHTTP(ctx context.Context, c *http.Client, url, token string, owner *child) error {
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(body))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready (last: %s): %w", url, last, ctx.Err())
		case <-owner.done:
			return exitError(owner)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func poll(ctx context.Context, cond wait.ConditionWithContextFunc) error {
	return wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, cond)
}

func exitError(c *child) error {
	return fmt.Errorf("%s exited unexpectedly: %v", c.name, c.err)
}

// withLogTail appends the end of a component's log, which usually names the cause.
func withLogTail(err error, logFile string) error {
	b, rerr := os.ReadFile(logFile)
	if rerr != nil {
		return err
	}
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return fmt.Errorf("%w\n--- last lines of %s ---\n%s", err, logFile, b)
}
