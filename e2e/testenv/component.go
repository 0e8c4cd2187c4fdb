package main

import (
	"os"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
)

// runComponent runs an upstream component command with the given arguments.
//
// The component is a child of `testenv up`. Pdeathsig already kills it when the
// parent dies, but Pdeathsig is tied to the parent's OS thread, so as a second
// line of defence the child also exits as soon as it is re-parented.
func runComponent(cmd *cobra.Command, args []string) int {
	if os.Getenv(envChildOf) != "" {
		go exitWhenOrphaned(os.Getppid())
	}
	cmd.SetArgs(args)
	return cli.Run(cmd)
}

// envChildOf marks a process started by `up`; only such processes watch their parent.
const envChildOf = "TESTENV_CHILD"

func exitWhenOrphaned(parent int) {
	for range time.Tick(250 * time.Millisecond) {
		if os.Getppid() != parent {
			os.Exit(3)
		}
	}
}
