package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"
)

// child is a control-plane component running as a child process of `up`.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // exit status, valid after done is closed
}

// spawnRequests is served by one goroutine that is locked to its OS thread for
// the life of the process. Pdeathsig fires when the *thread* that forked the
// child exits, not the process; Go may retire idle threads, so forking from a
// thread that never exits is what makes Pdeathsig mean "when up dies".
var spawnRequests = make(chan spawnRequest)

type spawnRequest struct {
	cmd  *exec.Cmd
	errc chan error
}

func init() {
	go func() {
		runtime.LockOSThread() // never unlocked, on purpose
		for r := range spawnRequests {
			r.errc <- r.cmd.Start()
		}
	}()
}

// startChild re-executes this binary as `testenv <name> args...`, with output in
// logFile. The child is killed by the kernel if `up` dies for any reason,
// including SIGKILL.
func startChild(name, logFile string, args []string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	log, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer log.Close() // the child has its own copy of the descriptor

	cmd := exec.Command(self, append([]string{name}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), envChildOf+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Pdeathsig: syscall.SIGKILL,
		// A process group of its own: a Ctrl-C on the terminal reaches only
		// `up`, which then stops the children in order.
		Setpgid: true,
	}
	errc := make(chan error)
	spawnRequests <- spawnRequest{cmd: cmd, errc: errc}
	if err := <-errc; err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// stop sends SIGTERM and escalates to SIGKILL after grace.
func (c *child) stop(grace time.Duration) {
	if c == nil {
		return
	}
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. All listeners are
// held open until every port is chosen so the kernel cannot hand out the same
// port twice; another process could still take one before we bind it, which is
// unlikely enough on a test machine.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
