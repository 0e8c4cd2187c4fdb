// Command testenv provides a real Kubernetes control plane (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler) plus a fake node agent for tests on a
// machine without a container runtime. It is one multi-call binary: `up` starts
// an environment and re-executes this same binary for the upstream components.
package main

import (
	"fmt"
	"os"
	_ "time/tzdata" // CronJob time zone support, as in the upstream mains.

	_ "k8s.io/component-base/logs/json/register"          // JSON log format, as upstream.
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as upstream.
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric, as upstream.
	"k8s.io/component-base/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

const usage = `usage: testenv <command> [flags]

commands:
  up --dir DIR [--nodes N] [--crd-dir DIR]...   run an environment until SIGTERM/SIGINT
  version                                        print the Kubernetes version
  kube-apiserver ...                             upstream kube-apiserver (used by up)
  kube-controller-manager ...                    upstream kube-controller-manager (used by up)
  kube-scheduler ...                             upstream kube-scheduler (used by up)
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	switch cmd {
	case "up":
		if err := runUp(args); err != nil {
			fmt.Fprintf(os.Stderr, "testenv up: %v\n", err)
			os.Exit(1)
		}
	case "version":
		fmt.Println(version.Get().GitVersion)
	case "kube-apiserver":
		os.Exit(runComponent(apiserver.NewAPIServerCommand(), args))
	case "kube-controller-manager":
		os.Exit(runComponent(controllermanager.NewControllerManagerCommand(), args))
	case "kube-scheduler":
		os.Exit(runComponent(scheduler.NewSchedulerCommand(), args))
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "testenv: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
}
