package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/component-base/version"
	"k8s.io/klog/v2"
)

const (
	nodePrefix = "testenv-node-"
	// probeLabel marks Pods whose final phase is decided by another component
	// (the mesh simulator); the agent only gets them Running.
	probeLabel = "meshmig.io/probe"
	// leaseDuration and leaseRenew follow the kubelet defaults.
	leaseDuration = 40
	leaseRenew    = 10 * time.Second
	podWorkers    = 4
)

// fakeNode is one registered node and its fake pod network.
type fakeNode struct {
	name   string
	ip     string       // InternalIP, also the IP of hostNetwork pods
	podNet netip.Prefix // one /16 per node, so 1000 pods always fit

	mu    sync.Mutex
	used  map[netip.Addr]string // pod IP -> pod key
	byKey map[string]netip.Addr // pod key -> pod IP
	next  netip.Addr
}

// nodeAgent plays the kubelet for the fake nodes: it registers them, renews
// their leases and drives the status of the Pods bound to them.
type nodeAgent struct {
	client kubernetes.Interface
	nodes  map[string]*fakeNode
	order  []*fakeNode
	pods   corelisters.PodLister
	queue  workqueue.TypedRateLimitingInterface[string]

	// written remembers, per pod, the resourceVersion our last status update
	// produced and a digest of the status we asked for. If the server then
	// hands back that same version and we would ask for the same status again,
	// the server normalised something we set; writing again would loop forever.
	writtenMu sync.Mutex
	written   map[string]writtenStatus
}

type writtenStatus struct {
	resourceVersion string
	digest          string
}

func newNodeAgent(client kubernetes.Interface, n int) *nodeAgent {
	a := &nodeAgent{
		client:  client,
		nodes:   map[string]*fakeNode{},
		written: map[string]writtenStatus{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "testenv-pods"}),
	}
	for i := 0; i < n; i++ {
		// Node and pod addresses are never dialled: nothing runs on them. They
		// must not be loopback, since EndpointSlice validation rejects those.
		net := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(64 + i), 0, 0}), 16)
		fn := &fakeNode{
			name:   fmt.Sprintf("%s%d", nodePrefix, i),
			ip:     fmt.Sprintf("172.30.0.%d", 10+i),
			podNet: net,
			used:   map[netip.Addr]string{},
			byKey:  map[string]netip.Addr{},
			next:   net.Addr().Next(),
		}
		a.nodes[fn.name] = fn
		a.order = append(a.order, fn)
	}
	return a
}

// registerNodes creates (or refreshes) every Node with a Ready status and
// clears the not-ready taint that the TaintNodesByCondition admission plugin
// adds at creation; normally the node-lifecycle controller removes it, but
// that controller is disabled here (it would mark the fake nodes unreachable).
func (a *nodeAgent) registerNodes(ctx context.Context) error {
	for _, fn := range a.order {
		if err := a.registerNode(ctx, fn); err != nil {
			return fmt.Errorf("register node %s: %w", fn.name, err)
		}
	}
	return nil
}

func (a *nodeAgent) registerNode(ctx context.Context, fn *fakeNode) error {
	want := fn.desiredNode()
	node, err := a.client.CoreV1().Nodes().Create(ctx, want, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		node, err = a.client.CoreV1().Nodes().Get(ctx, fn.name, metav1.GetOptions{})
	}
	if err != nil {
		return err
	}
	// The API server keeps the status sent with a Node on create (the kubelet
	// relies on that too); only a Node that already existed needs a write.
	if !isNodeReady(node) {
		node.Status = want.Status
		if _, err := a.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	return retryOnConflict(ctx, func() error {
		node, err := a.client.CoreV1().Nodes().Get(ctx, fn.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		var taints []corev1.Taint
		for _, t := range node.Spec.Taints {
			if t.Key != corev1.TaintNodeNotReady && t.Key != corev1.TaintNodeUnreachable {
				taints = append(taints, t)
			}
		}
		if len(taints) == len(node.Spec.Taints) {
			return nil
		}
		node.Spec.Taints = taints
		_, err = a.client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{})
		return err
	})
}

func (fn *fakeNode) desiredNode() *corev1.Node {
	now := metav1.Now()
	res := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("32"),
		corev1.ResourceMemory:           resource.MustParse("128Gi"),
		corev1.ResourcePods:             resource.MustParse("1000"),
		corev1.ResourceEphemeralStorage: resource.MustParse("500Gi"),
	}
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg,
			LastHeartbeatTime: now, LastTransitionTime: now}
	}
	v := version.Get().GitVersion
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: fn.name,
			Labels: map[string]string{
				"kubernetes.io/hostname":  fn.name,
				"kubernetes.io/os":        "linux",
				"kubernetes.io/arch":      "amd64",
				"beta.kubernetes.io/os":   "linux",
				"beta.kubernetes.io/arch": "amd64",
				"testenv.meshmig.io/fake": "true",
			},
		},
		Spec: corev1.NodeSpec{
			PodCIDR:  fn.podNet.String(),
			PodCIDRs: []string{fn.podNet.String()},
		},
		Status: corev1.NodeStatus{
			Capacity:    res,
			Allocatable: res,
			Phase:       corev1.NodeRunning,
			Conditions: []corev1.NodeCondition{
				cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "testenv node has sufficient memory"),
				cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "testenv node has no disk pressure"),
				cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "testenv node has sufficient PID available"),
				cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "testenv node agent is posting ready status"),
			},
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: fn.ip},
				{Type: corev1.NodeHostName, Address: fn.name},
			},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 10250}},
			NodeInfo: corev1.NodeSystemInfo{
				MachineID:               fn.name,
				SystemUUID:              fn.name,
				BootID:                  fn.name,
				KernelVersion:           "testenv",
				OSImage:                 "testenv (no container runtime)",
				ContainerRuntimeVersion: "testenv://" + v,
				KubeletVersion:          v,
				OperatingSystem:         "linux",
				Architecture:            "amd64",
			},
		},
	}
}

// renewLeases keeps each node's Lease in kube-node-lease fresh, as the kubelet does.
func (a *nodeAgent) renewLeases(ctx context.Context) {
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		for _, fn := range a.order {
			if err := a.renewLease(ctx, fn.name); err != nil && ctx.Err() == nil {
				klog.ErrorS(err, "renew lease", "node", fn.name)
			}
		}
	}, leaseRenew)
}

func (a *nodeAgent) renewLease(ctx context.Context, node string) error {
	leases := a.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	lease, err := leases.Get(ctx, node, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		holder, dur := node, int32(leaseDuration)
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: node, Namespace: corev1.NamespaceNodeLease},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder,
				LeaseDurationSeconds: &dur, RenewTime: &now},
		}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	lease.Spec.RenewTime = &now
	_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	return err
}

// runPods watches the Pods bound to any node (a field selector keeps unbound
// Pods out entirely, so nothing is ever reported Ready before it is scheduled)
// and reconciles them with a small pool of workers.
func (a *nodeAgent) runPods(ctx context.Context) error {
	factory := informers.NewSharedInformerFactoryWithOptions(a.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = "spec.nodeName!="
		}))
	inf := factory.Core().V1().Pods()
	a.pods = inf.Lister()
	_, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    a.enqueue,
		UpdateFunc: func(_, obj interface{}) { a.enqueue(obj) },
		DeleteFunc: a.forget,
	})
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return ctx.Err()
	}
	for i := 0; i < podWorkers; i++ {
		go wait.UntilWithContext(ctx, a.worker, time.Second)
	}
	go func() {
		<-ctx.Done()
		a.queue.ShutDown()
	}()
	return nil
}

func (a *nodeAgent) enqueue(obj interface{}) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	fn := a.nodes[pod.Spec.NodeName]
	if fn == nil {
		return
	}
	// Record IPs already handed out (e.g. by an earlier run) so that they are
	// never given to a second pod.
	if ip, err := netip.ParseAddr(pod.Status.PodIP); err == nil && fn.podNet.Contains(ip) {
		fn.mu.Lock()
		fn.used[ip] = podKey(pod)
		fn.byKey[podKey(pod)] = ip
		fn.mu.Unlock()
	}
	a.queue.Add(podKey(pod))
}

func (a *nodeAgent) forget(obj interface{}) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	key := podKey(pod)
	if fn := a.nodes[pod.Spec.NodeName]; fn != nil {
		fn.release(key, pod.Status.PodIP)
	}
	a.writtenMu.Lock()
	delete(a.written, key)
	a.writtenMu.Unlock()
}

func podKey(pod *corev1.Pod) string { return pod.Namespace + "/" + pod.Name }

func (a *nodeAgent) worker(ctx context.Context) {
	for {
		key, quit := a.queue.Get()
		if quit {
			return
		}
		err := a.sync(ctx, key)
		switch {
		case err == nil || apierrors.IsNotFound(err):
			a.queue.Forget(key)
		case apierrors.IsConflict(err):
			// A newer version is on its way through the informer, which will
			// enqueue the pod again.
			a.queue.Forget(key)
		default:
			if ctx.Err() == nil {
				klog.ErrorS(err, "sync pod", "pod", key)
			}
			a.queue.AddRateLimited(key)
		}
		a.queue.Done(key)
	}
}

func (a *nodeAgent) sync(ctx context.Context, key string) error {
	ns, name, _ := strings.Cut(key, "/")
	pod, err := a.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	fn := a.nodes[pod.Spec.NodeName]
	if fn == nil {
		return nil
	}

	// A kubelet stops the containers of a terminating pod and then deletes it
	// for good; there are no containers here, so delete at once. Finalizers
	// (e.g. Jobs' tracking finalizer) still hold the object until released.
	if pod.DeletionTimestamp != nil {
		if pod.DeletionGracePeriodSeconds != nil && *pod.DeletionGracePeriodSeconds == 0 {
			return nil // already force-deleted; waiting for finalizers
		}
		zero := int64(0)
		uid := pod.UID
		err := a.client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{
			GracePeriodSeconds: &zero,
			Preconditions:      &metav1.Preconditions{UID: &uid},
		})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil
		}
		return err
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil // terminal: a kubelet never changes these again
	}

	status, err := a.desiredStatus(pod, fn)
	if err != nil {
		return err
	}
	if apiequality.Semantic.DeepEqual(&pod.Status, status) {
		return nil
	}
	digest := statusDigest(status)
	a.writtenMu.Lock()
	last, seen := a.written[key]
	a.writtenMu.Unlock()
	if seen && last.resourceVersion == pod.ResourceVersion && last.digest == digest {
		return nil
	}

	update := pod.DeepCopy()
	update.Status = *status
	updated, err := a.client.CoreV1().Pods(ns).UpdateStatus(ctx, update, metav1.UpdateOptions{})
	if err != nil {
		return err
	}
	a.writtenMu.Lock()
	a.written[key] = writtenStatus{resourceVersion: updated.ResourceVersion, digest: digest}
	a.writtenMu.Unlock()
	return nil
}

// desiredStatus computes the status a kubelet with instantly starting
// containers would report. Timestamps of unchanged parts are kept so that a
// pod already in the desired state compares equal and is not written again.
func (a *nodeAgent) desiredStatus(pod *corev1.Pod, fn *fakeNode) (*corev1.PodStatus, error) {
	old := &pod.Status
	s := old.DeepCopy()
	now := metav1.Now()

	podIP := fn.ip
	if !pod.Spec.HostNetwork {
		ip, err := fn.allocate(podKey(pod), old.PodIP)
		if err != nil {
			return nil, err
		}
		podIP = ip
	}
	s.HostIP = fn.ip
	s.HostIPs = []corev1.HostIP{{IP: fn.ip}}
	s.PodIP = podIP
	s.PodIPs = []corev1.PodIP{{IP: podIP}}
	if s.StartTime == nil {
		s.StartTime = &now
	}
	s.ObservedGeneration = pod.Generation

	// Never/OnFailure pods run to completion: Running first, Succeeded on the
	// next pass, so both phases are observable. Probe pods stay Running; their
	// outcome belongs to the mesh simulator.
	_, isProbe := pod.Labels[probeLabel]
	completes := pod.Spec.RestartPolicy != corev1.RestartPolicyAlways && !isProbe
	done := completes && old.Phase == corev1.PodRunning

	s.InitContainerStatuses = nil
	for _, c := range pod.Spec.InitContainers {
		// Native sidecars (restartPolicy Always) keep running like app containers.
		sidecar := c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		st := containerStatus(pod, c.Name, c.Image, sidecar && !done)
		if !sidecar {
			st.Ready = true // a kubelet reports successfully completed init containers ready
		}
		s.InitContainerStatuses = append(s.InitContainerStatuses,
			keepTimes(st, findStatus(old.InitContainerStatuses, c.Name)))
	}
	s.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		st := containerStatus(pod, c.Name, c.Image, !done)
		s.ContainerStatuses = append(s.ContainerStatuses,
			keepTimes(st, findStatus(old.ContainerStatuses, c.Name)))
	}
	s.EphemeralContainerStatuses = nil
	for _, c := range pod.Spec.EphemeralContainers {
		st := containerStatus(pod, c.Name, c.Image, !done)
		s.EphemeralContainerStatuses = append(s.EphemeralContainerStatuses,
			keepTimes(st, findStatus(old.EphemeralContainerStatuses, c.Name)))
	}

	ready := !done
	reason := ""
	if done {
		s.Phase = corev1.PodSucceeded
		reason = "PodCompleted"
	} else {
		s.Phase = corev1.PodRunning
	}
	setCondition(s, pod, corev1.PodScheduled, true, "")
	setCondition(s, pod, corev1.PodReadyToStartContainers, !done, "")
	setCondition(s, pod, corev1.PodInitialized, true, reason)
	setCondition(s, pod, corev1.ContainersReady, ready, reason)
	// Like the kubelet, Ready also waits for every readiness gate to be True.
	podReady, podReason := ready, reason
	for _, g := range pod.Spec.ReadinessGates {
		if c := findCondition(s.Conditions, g.ConditionType); c == nil || c.Status != corev1.ConditionTrue {
			podReady, podReason = false, "ReadinessGatesNotReady"
		}
	}
	setCondition(s, pod, corev1.PodReady, podReady, podReason)
	return s, nil
}

// containerStatus is the status of one container that started instantly:
// running (and ready), or terminated successfully.
func containerStatus(pod *corev1.Pod, name, image string, running bool) corev1.ContainerStatus {
	now := metav1.Now()
	st := corev1.ContainerStatus{
		Name:         name,
		Image:        image,
		ImageID:      "testenv://sha256:" + digestOf(image),
		ContainerID:  "testenv://" + digestOf(string(pod.UID)+"/"+name),
		RestartCount: 0,
	}
	t, f := true, false
	if running {
		st.Ready, st.Started = true, &t
		st.State.Running = &corev1.ContainerStateRunning{StartedAt: now}
	} else {
		st.Ready, st.Started = false, &f
		st.State.Terminated = &corev1.ContainerStateTerminated{
			ExitCode: 0, Reason: "Completed", StartedAt: now, FinishedAt: now,
			ContainerID: st.ContainerID,
		}
	}
	return st
}

// keepTimes reuses the timestamps of an old status in the same state.
func keepTimes(st corev1.ContainerStatus, old *corev1.ContainerStatus) corev1.ContainerStatus {
	if old == nil {
		return st
	}
	switch {
	case st.State.Running != nil && old.State.Running != nil:
		st.State.Running.StartedAt = old.State.Running.StartedAt
	case st.State.Terminated != nil && old.State.Terminated != nil:
		st.State.Terminated.StartedAt = old.State.Terminated.StartedAt
		st.State.Terminated.FinishedAt = old.State.Terminated.FinishedAt
	case st.State.Terminated != nil && old.State.Running != nil:
		st.State.Terminated.StartedAt = old.State.Running.StartedAt
	}
	return st
}

func findStatus(list []corev1.ContainerStatus, name string) *corev1.ContainerStatus {
	for i := range list {
		if list[i].Name == name {
			return &list[i]
		}
	}
	return nil
}

func findCondition(list []corev1.PodCondition, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range list {
		if list[i].Type == t {
			return &list[i]
		}
	}
	return nil
}

// setCondition upserts a condition, keeping its transition time (and any
// condition types owned by others) when nothing changed.
func setCondition(s *corev1.PodStatus, pod *corev1.Pod, t corev1.PodConditionType, ok bool, reason string) {
	status := corev1.ConditionFalse
	if ok {
		status = corev1.ConditionTrue
	}
	if c := findCondition(s.Conditions, t); c != nil {
		if c.Status != status || c.Reason != reason {
			c.LastTransitionTime = metav1.Now()
		}
		c.Status, c.Reason, c.ObservedGeneration = status, reason, pod.Generation
		return
	}
	s.Conditions = append(s.Conditions, corev1.PodCondition{Type: t, Status: status, Reason: reason,
		ObservedGeneration: pod.Generation, LastTransitionTime: metav1.Now()})
}

// allocate returns the pod's IP, handing out the next free address of the
// node's range to a pod that has none yet.
func (fn *fakeNode) allocate(key, current string) (string, error) {
	if ip, err := netip.ParseAddr(current); err == nil && fn.podNet.Contains(ip) {
		return current, nil
	}
	fn.mu.Lock()
	defer fn.mu.Unlock()
	if ip, ok := fn.byKey[key]; ok { // a retried pod keeps the address it was given
		return ip.String(), nil
	}
	start := fn.next
	for {
		ip := fn.next
		fn.next = ip.Next()
		if !fn.podNet.Contains(fn.next) || fn.next == lastAddr(fn.podNet) {
			fn.next = fn.podNet.Addr().Next()
		}
		if _, taken := fn.used[ip]; !taken {
			fn.used[ip] = key
			fn.byKey[key] = ip
			return ip.String(), nil
		}
		if fn.next == start {
			return "", fmt.Errorf("node %s: pod network %s exhausted", fn.name, fn.podNet)
		}
	}
}

func (fn *fakeNode) release(key, ip string) {
	fn.mu.Lock()
	defer fn.mu.Unlock()
	if addr, ok := fn.byKey[key]; ok {
		delete(fn.byKey, key)
		if fn.used[addr] == key {
			delete(fn.used, addr)
		}
	}
	if addr, err := netip.ParseAddr(ip); err == nil && fn.used[addr] == key {
		delete(fn.used, addr)
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	bits := p.Bits()
	for i := 0; i < 4; i++ {
		keep := bits - 8*i
		switch {
		case keep <= 0:
			a[i] = 0xff
		case keep < 8:
			a[i] |= byte(0xff >> keep)
		}
	}
	return netip.AddrFrom4(a)
}

func digestOf(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func statusDigest(s *corev1.PodStatus) string {
	b, err := s.Marshal()
	if err != nil {
		return ""
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// retryOnConflict retries fn while it fails with a conflict.
func retryOnConflict(ctx context.Context, fn func() error) error {
	for {
		err := fn()
		if !apierrors.IsConflict(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// nodesReady reports whether every fake node is Ready and untainted.
func (a *nodeAgent) nodesReady(ctx context.Context) (bool, error) {
	for _, fn := range a.order {
		n, err := a.client.CoreV1().Nodes().Get(ctx, fn.name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if !isNodeReady(n) || len(n.Spec.Taints) > 0 {
			return false, nil
		}
	}
	return true, nil
}

func isNodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
