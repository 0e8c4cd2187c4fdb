package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"k8s.io/klog/v2"
)

// The API server reaches "the cluster" (kubelets for logs/exec/port-forward,
// the proxy subresources, Service-referenced webhooks and aggregated APIs) via
// its egress selector. Node, pod and Service addresses here are fake, so such
// connections must not leave the machine: the "cluster" egress is pointed at
// an HTTP CONNECT proxy on a unix socket that refuses every request with an
// explanation. URL-based webhooks use the "controlplane" egress, which stays
// direct, so webhooks at https://127.0.0.1:PORT work normally.
const egressConfigTemplate = `apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: %q
- name: controlplane
  connection:
    proxyProtocol: Direct
- name: etcd
  connection:
    proxyProtocol: Direct
`

// egressRefusal is the status line the API server includes in its error.
const egressRefusal = "HTTP/1.1 502 testenv has no cluster network: node, pod and Service addresses are fake (use a url webhook on 127.0.0.1)\r\nContent-Length: 0\r\n\r\n"

// startEgressGuard writes the egress selector config into dir and serves the
// refusing proxy. It returns the config path and a function that stops it.
func startEgressGuard(dir string) (string, func(), error) {
	sock := filepath.Join(dir, "egress.sock")
	cleanup := func() {}
	// sun_path holds 108 bytes; fall back to a short private directory.
	if len(sock) > 100 {
		tmp, err := os.MkdirTemp("", "testenv-egress-")
		if err != nil {
			return "", nil, err
		}
		sock = filepath.Join(tmp, "egress.sock")
		cleanup = func() { os.RemoveAll(tmp) }
	}
	_ = os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		cleanup()
		return "", nil, fmt.Errorf("egress guard: %w", err)
	}
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return // listener closed
			}
			go refuseConnect(conn)
		}
	}()
	cfg := filepath.Join(dir, "egress-selector.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(egressConfigTemplate, sock)), 0o600); err != nil {
		l.Close()
		cleanup()
		return "", nil, err
	}
	return cfg, func() { l.Close(); cleanup() }, nil
}

func refuseConnect(conn net.Conn) {
	defer conn.Close()
	req, err := http.ReadRequest(bufio.NewReader(conn))
	if err != nil {
		return
	}
	klog.InfoS("refused API server connection into the fake cluster network", "target", req.Host)
	_, _ = conn.Write([]byte(egressRefusal))
}
