package main

// `routes`: the HTTP routes istiod generates for one proxy, a sidecar (its outbound RDS
// route configurations) or a waypoint (the route configuration inlined in each of its
// per-Service filter chains), normalised into the JSON documented in README.md.
//
// The route tables come from istiod's own generator running in Istio's exported fake
// discovery server (pilot/test/xds): the objects go into its fake Kubernetes client and
// its config store, a proxy is set up as istiod sets up a connecting one (SidecarScope,
// service targets, gateways), and the listeners and routes are built with the same
// ConfigGenerator istiod serves xDS from.

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"k8s.io/apimachinery/pkg/runtime"

	networking "istio.io/api/networking/v1alpha3"
	"istio.io/istio/pilot/pkg/config/kube/crd"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/pkg/networking/core"
	"istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/mesh"
	kubelib "istio.io/istio/pkg/kube"
	"istio.io/istio/pkg/test"
	"istio.io/istio/pkg/wellknown"
)

const (
	// ambientEnv is read by istiod's feature flags when the process starts.
	ambientEnv = "PILOT_ENABLE_AMBIENT"
	// What the Gateway deployment controller would create for a waypoint, when the input
	// has none: its Service's cluster IP and its one Pod's IP.
	waypointServiceIP = "10.96.255.254"
	waypointPodIP     = "10.244.255.254"
	// The sidecar's own (client) address: selected by no Service.
	sidecarIP = "10.244.255.253"
	// Cluster IPs given to Services that have none (offline inventories usually do not).
	assignedIPPrefix = "10.96."
	// The fake discovery server's (and istiod's default) domain suffix.
	domainSuffix = "cluster.local"
)

type routesFlags struct {
	proxy, namespace, gateway, labels string
	raw                               bool
}

func parseRoutes(args []string) (command, error) {
	var f routesFlags
	fs := flag.NewFlagSet("routes", flag.ContinueOnError)
	fs.StringVar(&f.proxy, "for", "", "sidecar (a sidecar's outbound routes) or waypoint (a waypoint's per-Service routes)")
	fs.StringVar(&f.namespace, "namespace", "", "namespace of the sidecar's workload or of the waypoint")
	fs.StringVar(&f.gateway, "gateway", "", "waypoint: name of its Gateway (class istio-waypoint)")
	fs.StringVar(&f.labels, "labels", "", "sidecar: the workload's labels, k=v,k=v")
	fs.BoolVar(&f.raw, "raw", false, "also emit every Envoy route as protojson (`raw`)")
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	if f.namespace == "" {
		return nil, errors.New("--namespace is required")
	}
	switch f.proxy {
	case "sidecar":
		if f.gateway != "" {
			return nil, errors.New("--gateway is for --for waypoint")
		}
	case "waypoint":
		if f.gateway == "" || f.labels != "" {
			return nil, errors.New("--for waypoint takes --gateway, not --labels")
		}
	default:
		return nil, fmt.Errorf("--for must be sidecar or waypoint, not %q", f.proxy)
	}
	proxyLabels, err := parseLabels(f.labels)
	if err != nil {
		return nil, err
	}
	if err := ambientFor(f.proxy == "waypoint"); err != nil {
		return nil, err
	}
	return func(objects []json.RawMessage) (any, error) {
		return routesFor(objects, f, proxyLabels)
	}, nil
}

// ambientFor makes istiod's feature flags those of an istiod with ambient on (waypoint)
// or off (sidecar: the control plane before the migration). The flags, and every
// default derived from PILOT_ENABLE_AMBIENT, are read once when the process starts, so
// the only faithful way to change them is to start again with the variable set.
func ambientFor(on bool) error {
	want := strconv.FormatBool(on)
	if os.Getenv(ambientEnv) == want {
		return nil
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("re-running with %s=%s: %w", ambientEnv, want, err)
	}
	env := append(os.Environ(), ambientEnv+"="+want)
	return syscall.Exec(self, os.Args, env)
}

// routesResult is the output of `routes`.
type routesResult struct {
	Proxy        proxyInfo              `json:"proxy"`
	RouteConfigs []routeConfig          `json:"routeConfigs"`
	Clusters     map[string]clusterInfo `json:"clusters"`
	Ignored      []string               `json:"ignored"`
}

type proxyInfo struct {
	Type      string `json:"type"`
	Namespace string `json:"namespace"`
	Gateway   string `json:"gateway,omitempty"`
	// The Services a waypoint serves ("namespace/hostname"), as istiod's ambient index binds them.
	Services []string `json:"services,omitempty"`
}

type routeConfig struct {
	Name string `json:"name"`
	// Waypoint only: the filter chain (`inbound-vip|port|protocol|hostname`) and the
	// Service port it serves.
	FilterChain  string        `json:"filterChain,omitempty"`
	Service      *servicePort  `json:"service,omitempty"`
	VirtualHosts []virtualHost `json:"virtualHosts"`
}

type servicePort struct {
	Hostname string `json:"hostname"`
	Port     int    `json:"port"`
	Protocol string `json:"protocol"`
}

type virtualHost struct {
	Name            string    `json:"name"`
	Domains         []string  `json:"domains"`
	Routes          []route   `json:"routes"`
	RequestHeaders  headerOps `json:"requestHeaders"`
	ResponseHeaders headerOps `json:"responseHeaders"`
	// Anything set on the virtual host that is not modelled here (field names).
	Unsupported []string `json:"unsupported"`
}

type route struct {
	Name string `json:"name"`
	// The Istio config the route came from (istiod's route metadata), e.g.
	// /apis/networking.istio.io/v1/namespaces/ns/virtual-service/name.
	Config          string          `json:"config,omitempty"`
	Match           routeMatch      `json:"match"`
	Action          action          `json:"action"`
	RequestHeaders  headerOps       `json:"requestHeaders"`
	ResponseHeaders headerOps       `json:"responseHeaders"`
	Cors            *cors           `json:"cors"`
	Fault           *fault          `json:"fault"`
	PerFilter       []string        `json:"perFilterConfig"`
	Unsupported     []string        `json:"unsupported"`
	Raw             json.RawMessage `json:"raw,omitempty"`
}

type routeMatch struct {
	Path        pathMatch     `json:"path"`
	Headers     []headerMatch `json:"headers"`
	QueryParams []queryMatch  `json:"queryParams"`
	// Parts of the match this structure does not model (field names): a matcher must not
	// pretend to evaluate a route that has any.
	Unsupported []string `json:"unsupported"`
}

type pathMatch struct {
	// prefix, exact, regex, pathSeparatedPrefix, template, connect.
	Type          string `json:"type"`
	Value         string `json:"value"`
	CaseSensitive bool   `json:"caseSensitive"`
}

type stringMatch struct {
	// exact, prefix, suffix, contains, regex, present, absent, range.
	Type       string `json:"type"`
	Value      string `json:"value,omitempty"`
	IgnoreCase bool   `json:"ignoreCase,omitempty"`
}

type headerMatch struct {
	Name           string      `json:"name"`
	Match          stringMatch `json:"match"`
	Invert         bool        `json:"invert,omitempty"`
	MissingAsEmpty bool        `json:"missingAsEmpty,omitempty"`
}

type queryMatch struct {
	Name  string      `json:"name"`
	Match stringMatch `json:"match"`
}

type action struct {
	// route, redirect, directResponse, nonForwarding, filterAction, none.
	Type           string          `json:"type"`
	Route          *routeAction    `json:"route,omitempty"`
	Redirect       *redirectAction `json:"redirect,omitempty"`
	DirectResponse *directResponse `json:"directResponse,omitempty"`
}

type routeAction struct {
	// One entry without a weight for a single cluster; weighted clusters otherwise.
	Clusters        []weightedCluster `json:"clusters"`
	ClusterHeader   string            `json:"clusterHeader,omitempty"`
	PrefixRewrite   *string           `json:"prefixRewrite"`
	RegexRewrite    *regexRewrite     `json:"regexRewrite"`
	HostRewrite     *string           `json:"hostRewrite"`
	AutoHostRewrite bool              `json:"autoHostRewrite,omitempty"`
	// Go duration strings ("0s" disables the timeout; null is Envoy's 15 s default).
	Timeout     *string           `json:"timeout"`
	IdleTimeout *string           `json:"idleTimeout"`
	Retry       *retryPolicy      `json:"retry"`
	Mirrors     []mirror          `json:"mirrors"`
	HashPolicy  []json.RawMessage `json:"hashPolicy"`
	// The status Envoy answers with when a cluster does not exist (Envoy's default: 503).
	ClusterNotFoundStatus int      `json:"clusterNotFoundStatus"`
	Unsupported           []string `json:"unsupported"`
}

type weightedCluster struct {
	Name            string    `json:"name"`
	Weight          *uint32   `json:"weight"`
	RequestHeaders  headerOps `json:"requestHeaders"`
	ResponseHeaders headerOps `json:"responseHeaders"`
	HostRewrite     *string   `json:"hostRewrite"`
}

type regexRewrite struct {
	Pattern      string `json:"pattern"`
	Substitution string `json:"substitution"`
}

type retryPolicy struct {
	RetryOn                  string   `json:"retryOn"`
	NumRetries               *uint32  `json:"numRetries"`
	PerTryTimeout            *string  `json:"perTryTimeout"`
	RetriableStatusCodes     []uint32 `json:"retriableStatusCodes"`
	HostPredicates           []string `json:"hostPredicates"`
	HostSelectionMaxAttempts int64    `json:"hostSelectionMaxAttempts,omitempty"`
	BackoffBase              *string  `json:"backoffBase"`
	BackoffMax               *string  `json:"backoffMax"`
	Unsupported              []string `json:"unsupported"`
}

type mirror struct {
	Cluster string `json:"cluster"`
	// Percent of requests mirrored (100 when the policy has no runtime fraction).
	Percent      float64 `json:"percent"`
	TraceSampled *bool   `json:"traceSampled,omitempty"`
}

type redirectAction struct {
	Scheme        string        `json:"scheme,omitempty"`
	Host          string        `json:"host,omitempty"`
	Port          uint32        `json:"port,omitempty"`
	Path          *string       `json:"path"`
	PrefixRewrite *string       `json:"prefixRewrite"`
	RegexRewrite  *regexRewrite `json:"regexRewrite"`
	Code          int           `json:"code"`
	StripQuery    bool          `json:"stripQuery,omitempty"`
}

type directResponse struct {
	Status uint32 `json:"status"`
	Body   string `json:"body,omitempty"`
}

type headerOps struct {
	Add    []headerValue `json:"add"`
	Remove []string      `json:"remove"`
}

type headerValue struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	// append (APPEND_IF_EXISTS_OR_ADD), addIfAbsent, overwrite (OVERWRITE_IF_EXISTS_OR_ADD),
	// overwriteIfExists.
	Action string `json:"action"`
}

type cors struct {
	AllowOrigins     []stringMatch `json:"allowOrigins"`
	AllowMethods     string        `json:"allowMethods,omitempty"`
	AllowHeaders     string        `json:"allowHeaders,omitempty"`
	ExposeHeaders    string        `json:"exposeHeaders,omitempty"`
	MaxAge           string        `json:"maxAge,omitempty"`
	AllowCredentials *bool         `json:"allowCredentials"`
	// Percent of requests the policy is enforced for (null: always).
	FilterEnabled *float64 `json:"filterEnabled"`
	ShadowEnabled *float64 `json:"shadowEnabled"`
	// allowPrivateNetworkAccess, forwardNotMatchingPreflights when set.
	Other map[string]bool `json:"other,omitempty"`
}

type fault struct {
	DelayFixed   string   `json:"delayFixed,omitempty"`
	DelayPercent *float64 `json:"delayPercent"`
	AbortStatus  uint32   `json:"abortStatus,omitempty"`
	AbortGrpc    uint32   `json:"abortGrpcStatus,omitempty"`
	AbortPercent *float64 `json:"abortPercent"`
	Unsupported  []string `json:"unsupported"`
}

// clusterInfo is istiod's own view of a cluster a route names: the Service it belongs to
// (ServiceIndex) and, for a subset, the subset's labels from the DestinationRule the
// proxy's SidecarScope picks (the one istiod builds the subset cluster from).
type clusterInfo struct {
	Direction string `json:"direction"`
	// The subset part of the name: a DestinationRule subset for a sidecar's outbound
	// cluster; `<protocol>[/<subset>]` for a waypoint's inbound-vip cluster.
	Subset   string `json:"subset"`
	Hostname string `json:"hostname"`
	Port     int    `json:"port"`
	// Whether istiod knows a Service with this hostname.
	Resolved  bool              `json:"resolved"`
	Namespace string            `json:"namespace,omitempty"`
	Name      string            `json:"name,omitempty"`
	Selector  map[string]string `json:"selector,omitempty"`
	// Labels of the DestinationRule subset (nil without a subset); `subsetRule` names the
	// DestinationRule, `subsetFound` is false when the rule has no such subset.
	SubsetLabels map[string]string `json:"subsetLabels,omitempty"`
	SubsetRule   string            `json:"subsetRule,omitempty"`
	SubsetFound  *bool             `json:"subsetFound,omitempty"`
}

// failer is what istiod's fakes report failures to; test.Wrap supplies one that turns a
// Fatal into the error it returns.
type failer = test.Failer

func routesFor(objects []json.RawMessage, f routesFlags, proxyLabels map[string]string) (routesResult, error) {
	res := routesResult{
		Proxy:    proxyInfo{Type: f.proxy, Namespace: f.namespace, Gateway: f.gateway},
		Clusters: map[string]clusterInfo{},
		Ignored:  []string{},
	}
	prepared, err := prepareObjects(objects, f)
	if err != nil {
		return res, err
	}
	var kube []runtime.Object
	var configs []config.Config
	decode := kubelib.IstioCodec.UniversalDeserializer().Decode
	for _, raw := range prepared {
		m, _ := objectMeta(raw)
		what := fmt.Sprintf("%s %s %s/%s", m.APIVersion, m.Kind, m.Metadata.Namespace, m.Metadata.Name)
		if !readByIstiod(m.APIVersion, m.Kind) {
			res.Ignored = append(res.Ignored, what+": not a kind istiod's route generation reads")
			continue
		}
		obj, _, err := decode(raw, nil, nil)
		if err != nil {
			res.Ignored = append(res.Ignored, what+": not a kind istiod reads ("+firstLine(err.Error())+")")
			continue
		}
		// Istio and Gateway API kinds also go to the config store, as istiod's own
		// simulation tests give them (crd.ParseInputs validates them with the schema, as
		// the webhook would have: an invalid object never reaches istiod).
		if isConfigGroup(m.APIVersion) {
			cfgs, _, err := crd.ParseInputs(string(raw))
			if err != nil {
				res.Ignored = append(res.Ignored, what+": rejected by Istio's validation ("+firstLine(err.Error())+")")
				continue
			}
			for i := range cfgs {
				// What istiod's CRD client sets: short hosts resolve against it.
				cfgs[i].Domain = domainSuffix
			}
			configs = append(configs, cfgs...)
		}
		kube = append(kube, obj)
	}

	err = test.Wrap(func(t failer) {
		fake := xds.NewFakeDiscoveryServer(t, xds.FakeOptions{
			Configs:           configs,
			KubernetesObjects: kube,
			MeshConfig:        mesh.DefaultMeshConfig(),
		})
		if f.proxy == "sidecar" {
			proxy := fake.SetupProxy(&model.Proxy{
				Type:            model.SidecarProxy,
				ConfigNamespace: f.namespace,
				ID:              "meshmig-probe." + f.namespace,
				Labels:          proxyLabels,
				Metadata:        &model.NodeMetadata{Namespace: f.namespace, Labels: proxyLabels},
				IPAddresses:     []string{sidecarIP},
			})
			for _, rc := range fake.Routes(proxy) {
				res.RouteConfigs = append(res.RouteConfigs, convertRouteConfig(rc, f.raw))
			}
			res.Clusters = clusterTable(fake.PushContext(), proxy, res.RouteConfigs)
			return
		}
		labels := map[string]string{
			"gateway.networking.k8s.io/gateway-name": f.gateway,
			"gateway.istio.io/managed":               "istio.io-mesh-controller",
		}
		proxy := fake.SetupProxy(&model.Proxy{
			Type:            model.Waypoint,
			ConfigNamespace: f.namespace,
			ID:              f.gateway + "-0." + f.namespace,
			Labels:          labels,
			Metadata:        &model.NodeMetadata{Namespace: f.namespace, Labels: labels},
			IPAddresses:     []string{waypointPodIP},
		})
		push := fake.PushContext()
		for _, s := range push.ServicesForWaypoint(model.WaypointKeyForProxy(proxy)) {
			res.Proxy.Services = append(res.Proxy.Services, s.Service.Namespace+"/"+s.Service.Hostname)
		}
		sort.Strings(res.Proxy.Services)
		rcs, err := waypointRouteConfigs(fake.Listeners(proxy), f.raw)
		if err != nil {
			t.Fatal(err)
		}
		res.RouteConfigs = rcs
		res.Clusters = clusterTable(push, proxy, res.RouteConfigs)
	})
	if res.RouteConfigs == nil {
		res.RouteConfigs = []routeConfig{}
	}
	return res, err
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// readByIstiod says whether istiod reads the kind when it builds routes: core Namespaces,
// Services, Pods and Endpoints, EndpointSlices, and the Istio and Gateway API kinds. Others
// (Deployments, CRDs, Secrets, ...) are left out: the fake client cannot hold some of them,
// and none changes a route.
func readByIstiod(apiVersion, kind string) bool {
	if apiVersion == "v1" {
		switch kind {
		case "Namespace", "Service", "Pod", "Endpoints":
			return true
		}
		return false
	}
	return apiVersion == "discovery.k8s.io/v1" && kind == "EndpointSlice" || isConfigGroup(apiVersion)
}

func isConfigGroup(apiVersion string) bool {
	group, _, _ := strings.Cut(apiVersion, "/")
	return strings.HasSuffix(group, ".istio.io") || group == "gateway.networking.k8s.io" ||
		group == "gateway.networking.x-k8s.io"
}

// prepareObjects completes what an offline inventory lacks and a cluster has: cluster IPs
// for Services, and, for a waypoint, what Istio's Gateway deployment controller creates
// once the waypoint is running (its Service, a ready Pod, the Gateway's status address,
// the istio-waypoint GatewayClass), and the Gateway API CRDs' defaults.
func prepareObjects(objects []json.RawMessage, f routesFlags) ([]json.RawMessage, error) {
	var out []json.RawMessage
	usedIPs := map[string]bool{}
	var services []map[string]any
	haveGateway, haveClass, haveWaypointService, haveWaypointPod := false, false, false, false
	for _, raw := range objects {
		var obj map[string]any
		if err := json.Unmarshal(raw, &obj); err != nil {
			return nil, err
		}
		apiVersion, _ := obj["apiVersion"].(string)
		kind, _ := obj["kind"].(string)
		md, _ := obj["metadata"].(map[string]any)
		name, _ := md["name"].(string)
		ns, _ := md["namespace"].(string)
		switch {
		case apiVersion == "v1" && kind == "Service":
			spec, _ := obj["spec"].(map[string]any)
			if ip, _ := spec["clusterIP"].(string); ip != "" && ip != "None" {
				usedIPs[ip] = true
			}
			services = append(services, obj)
			if ns == f.namespace && name == f.gateway {
				haveWaypointService = true
			}
		case apiVersion == "v1" && kind == "Pod":
			if l, _ := md["labels"].(map[string]any); ns == f.namespace && f.gateway != "" &&
				l["gateway.networking.k8s.io/gateway-name"] == f.gateway {
				haveWaypointPod = true
			}
		case strings.HasPrefix(apiVersion, "gateway.networking.k8s.io/") && kind == "Gateway" &&
			ns == f.namespace && name == f.gateway:
			haveGateway = true
			status, _ := obj["status"].(map[string]any)
			if status == nil {
				status = map[string]any{}
				obj["status"] = status
			}
			if addrs, _ := status["addresses"].([]any); len(addrs) == 0 {
				status["addresses"] = []any{map[string]any{
					"type": "Hostname", "value": f.gateway + "." + f.namespace + ".svc." + domainSuffix,
				}}
			}
		case strings.HasPrefix(apiVersion, "gateway.networking.k8s.io/") && kind == "GatewayClass" &&
			name == "istio-waypoint":
			haveClass = true
		}
		if strings.HasPrefix(apiVersion, "gateway.networking.k8s.io/") {
			applyDefaults(obj, gatewayAPIDefaults[kind])
		}
		if kind != "Service" || apiVersion != "v1" {
			enc, err := json.Marshal(obj)
			if err != nil {
				return nil, err
			}
			out = append(out, enc)
		}
	}
	if f.proxy == "waypoint" {
		if !haveGateway {
			return nil, fmt.Errorf("no Gateway %s/%s in the input", f.namespace, f.gateway)
		}
		if !haveClass {
			out = append(out, mustJSON(map[string]any{
				"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
				"metadata": map[string]any{"name": "istio-waypoint"},
				"spec":     map[string]any{"controllerName": "istio.io/mesh-controller"},
			}))
		}
		gwLabel := map[string]any{"gateway.networking.k8s.io/gateway-name": f.gateway}
		if !haveWaypointService {
			services = append(services, map[string]any{
				"apiVersion": "v1", "kind": "Service",
				"metadata": map[string]any{
					"name": f.gateway, "namespace": f.namespace,
					"labels": map[string]any{
						"gateway.networking.k8s.io/gateway-name": f.gateway,
						"gateway.istio.io/managed":               "istio.io-mesh-controller",
					},
				},
				"spec": map[string]any{
					"clusterIP": waypointServiceIP, "clusterIPs": []any{waypointServiceIP},
					"selector": gwLabel,
					"ports":    []any{map[string]any{"name": "mesh", "port": 15008, "appProtocol": "hbone"}},
				},
			})
			usedIPs[waypointServiceIP] = true
		}
		if !haveWaypointPod {
			out = append(out, mustJSON(map[string]any{
				"apiVersion": "v1", "kind": "Pod",
				"metadata": map[string]any{
					"name": f.gateway + "-0", "namespace": f.namespace,
					"labels": map[string]any{
						"gateway.networking.k8s.io/gateway-name": f.gateway,
						"gateway.istio.io/managed":               "istio.io-mesh-controller",
					},
				},
				"spec": map[string]any{"serviceAccountName": f.gateway},
				"status": map[string]any{
					"phase": "Running", "podIP": waypointPodIP,
					"podIPs":     []any{map[string]any{"ip": waypointPodIP}},
					"conditions": []any{map[string]any{"type": "Ready", "status": "True"}},
				},
			}))
		}
	}
	// Deterministic cluster IPs, in input order, skipping any the input uses.
	next := 1
	for _, svc := range services {
		spec, _ := svc["spec"].(map[string]any)
		if spec == nil {
			spec = map[string]any{}
			svc["spec"] = spec
		}
		ip, _ := spec["clusterIP"].(string)
		typ, _ := spec["type"].(string)
		if ip == "" && typ != "ExternalName" {
			for {
				ip = fmt.Sprintf("%s%d.%d", assignedIPPrefix, next/250, next%250+1)
				next++
				if !usedIPs[ip] {
					break
				}
			}
			usedIPs[ip] = true
			spec["clusterIP"] = ip
			spec["clusterIPs"] = []any{ip}
		}
		out = append(out, mustJSON(svc))
	}
	return out, nil
}

// defaultRule is one `default` of a Gateway API CRD's schema: the API server sets `value`
// at `path` when the field is absent (its structural defaulting). istiod's Gateway API
// conversion relies on these defaults (a match without a path would crash it), and an
// offline inventory has none of them.
type defaultRule struct {
	path  string // dotted, `[]` for every item of a list: spec.rules[].matches
	value any
}

// gatewayAPIDefaults lists the spec defaults of the Gateway API CRDs (v1.6, standard and
// experimental channels) for the kinds meshmig generates. TestGatewayAPIDefaultsMatchCRDs
// compares them with the CRDs of the sigs.k8s.io/gateway-api module Istio is built with.
var gatewayAPIDefaults = map[string][]defaultRule{
	"HTTPRoute": {
		{"spec.parentRefs[].group", "gateway.networking.k8s.io"},
		{"spec.parentRefs[].kind", "Gateway"},
		{"spec.rules", []any{map[string]any{"matches": []any{map[string]any{"path": map[string]any{"type": "PathPrefix", "value": "/"}}}}}},
		{"spec.rules[].matches", []any{map[string]any{"path": map[string]any{"type": "PathPrefix", "value": "/"}}}},
		{"spec.rules[].matches[].path", map[string]any{"type": "PathPrefix", "value": "/"}},
		{"spec.rules[].matches[].path.type", "PathPrefix"},
		{"spec.rules[].matches[].path.value", "/"},
		{"spec.rules[].matches[].headers[].type", "Exact"},
		{"spec.rules[].matches[].queryParams[].type", "Exact"},
		{"spec.rules[].backendRefs[].group", ""},
		{"spec.rules[].backendRefs[].kind", "Service"},
		{"spec.rules[].backendRefs[].weight", 1},
		{"spec.rules[].filters[].cors.maxAge", 5},
		{"spec.rules[].filters[].requestMirror.backendRef.group", ""},
		{"spec.rules[].filters[].requestMirror.backendRef.kind", "Service"},
		{"spec.rules[].filters[].requestMirror.fraction.denominator", 100},
		{"spec.rules[].filters[].requestRedirect.statusCode", 302},
		{"spec.rules[].filters[].externalAuth.backendRef.group", ""},
		{"spec.rules[].filters[].externalAuth.backendRef.kind", "Service"},
		{"spec.rules[].backendRefs[].filters[].cors.maxAge", 5},
		{"spec.rules[].backendRefs[].filters[].requestMirror.backendRef.group", ""},
		{"spec.rules[].backendRefs[].filters[].requestMirror.backendRef.kind", "Service"},
		{"spec.rules[].backendRefs[].filters[].requestMirror.fraction.denominator", 100},
		{"spec.rules[].backendRefs[].filters[].requestRedirect.statusCode", 302},
		{"spec.rules[].backendRefs[].filters[].externalAuth.backendRef.group", ""},
		{"spec.rules[].backendRefs[].filters[].externalAuth.backendRef.kind", "Service"},
		{"spec.rules[].sessionPersistence.type", "Cookie"},
		{"spec.rules[].sessionPersistence.cookieConfig.lifetimeType", "Session"},
	},
	"Gateway": {
		{"spec.addresses[].type", "IPAddress"},
		{"spec.allowedListeners.namespaces", map[string]any{"from": "None"}},
		{"spec.allowedListeners.namespaces.from", "None"},
		{"spec.listeners[].allowedRoutes", map[string]any{"namespaces": map[string]any{"from": "Same"}}},
		{"spec.listeners[].allowedRoutes.namespaces", map[string]any{"from": "Same"}},
		{"spec.listeners[].allowedRoutes.namespaces.from", "Same"},
		{"spec.listeners[].allowedRoutes.kinds[].group", "gateway.networking.k8s.io"},
		{"spec.listeners[].tls.mode", "Terminate"},
		{"spec.listeners[].tls.certificateRefs[].group", ""},
		{"spec.listeners[].tls.certificateRefs[].kind", "Secret"},
		{"spec.tls.backend.clientCertificateRef.group", ""},
		{"spec.tls.backend.clientCertificateRef.kind", "Secret"},
		{"spec.tls.frontend.default.validation.mode", "AllowValidOnly"},
		{"spec.tls.frontend.perPort[].tls.validation.mode", "AllowValidOnly"},
	},
}

// applyDefaults sets every absent defaulted field, parents before children (so that a
// defaulted object gets its own fields' defaults too), as structural defaulting does.
func applyDefaults(obj map[string]any, rules []defaultRule) {
	sorted := append([]defaultRule(nil), rules...)
	sort.SliceStable(sorted, func(i, j int) bool {
		return strings.Count(sorted[i].path, ".") < strings.Count(sorted[j].path, ".")
	})
	for _, r := range sorted {
		setDefault(obj, strings.Split(r.path, "."), r.value)
	}
}

func setDefault(node any, path []string, value any) {
	m, ok := node.(map[string]any)
	if !ok || len(path) == 0 {
		return
	}
	key, each := strings.CutSuffix(path[0], "[]")
	child, present := m[key]
	if len(path) == 1 {
		if !present && !each {
			m[key] = deepCopy(value)
		}
		return
	}
	if !present {
		return
	}
	if each {
		items, _ := child.([]any)
		for _, item := range items {
			setDefault(item, path[1:], value)
		}
		return
	}
	setDefault(child, path[1:], value)
}

func deepCopy(v any) any {
	var out any
	b, _ := json.Marshal(v)
	_ = json.Unmarshal(b, &out)
	return out
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// waypointRouteConfigs extracts the route configuration istiod inlines in each filter
// chain of the waypoint's main_internal listener (one chain per Service VIP and port).
func waypointRouteConfigs(listeners []*listenerv3.Listener, raw bool) ([]routeConfig, error) {
	var out []routeConfig
	for _, l := range listeners {
		if l.GetName() != core.MainInternalName {
			continue
		}
		for _, fc := range l.GetFilterChains() {
			for _, filter := range fc.GetFilters() {
				if filter.GetName() != wellknown.HTTPConnectionManager {
					continue
				}
				h := &hcmv3.HttpConnectionManager{}
				if err := filter.GetTypedConfig().UnmarshalTo(h); err != nil {
					return nil, fmt.Errorf("filter chain %s: %w", fc.GetName(), err)
				}
				rc := h.GetRouteConfig()
				if rc == nil {
					continue
				}
				c := convertRouteConfig(rc, raw)
				c.FilterChain = fc.GetName()
				dir, protocol, hostname, port := model.ParseSubsetKey(fc.GetName())
				if dir == model.TrafficDirectionInboundVIP {
					c.Service = &servicePort{Hostname: string(hostname), Port: port, Protocol: protocol}
				}
				out = append(out, c)
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].FilterChain < out[j].FilterChain })
	if out == nil {
		out = []routeConfig{}
	}
	return out, nil
}

// clusterTable resolves every cluster the routes name to istiod's Service and subset.
func clusterTable(push *model.PushContext, proxy *model.Proxy, rcs []routeConfig) map[string]clusterInfo {
	names := map[string]bool{}
	for _, rc := range rcs {
		for _, vh := range rc.VirtualHosts {
			for _, r := range vh.Routes {
				if r.Action.Route == nil {
					continue
				}
				for _, c := range r.Action.Route.Clusters {
					names[c.Name] = true
				}
				for _, m := range r.Action.Route.Mirrors {
					names[m.Cluster] = true
				}
			}
		}
	}
	out := map[string]clusterInfo{}
	for name := range names {
		dir, subset, hostname, port := model.ParseSubsetKey(name)
		info := clusterInfo{Direction: string(dir), Subset: subset, Hostname: string(hostname), Port: port}
		svc := push.ServiceForHostname(proxy, hostname)
		if svc == nil {
			for _, s := range push.ServiceIndex.HostnameAndNamespace[hostname] {
				svc = s
				break
			}
		}
		if svc != nil && hostname != "" {
			info.Resolved = true
			info.Namespace = svc.Attributes.Namespace
			info.Name = svc.Attributes.Name
			info.Selector = svc.Attributes.LabelSelectors
			subsetName := subset
			if dir == model.TrafficDirectionInboundVIP {
				// <protocol>[/<subset>]
				_, subsetName, _ = strings.Cut(subset, "/")
			}
			if subsetName != "" && proxy.SidecarScope != nil {
				found := false
				if cdr := proxy.SidecarScope.DestinationRule(model.TrafficDirectionOutbound, proxy, hostname); cdr != nil {
					rule := cdr.GetRule()
					info.SubsetRule = rule.Namespace + "/" + rule.Name
					for _, s := range rule.Spec.(*networking.DestinationRule).GetSubsets() {
						if s.GetName() == subsetName {
							found = true
							info.SubsetLabels = s.GetLabels()
							if info.SubsetLabels == nil {
								info.SubsetLabels = map[string]string{}
							}
						}
					}
				}
				info.SubsetFound = &found
			}
		}
		out[name] = info
	}
	return out
}

// ---------------------------------------------------------------- normalisation

func convertRouteConfig(rc *routev3.RouteConfiguration, raw bool) routeConfig {
	out := routeConfig{Name: rc.GetName(), VirtualHosts: []virtualHost{}}
	for _, vh := range rc.GetVirtualHosts() {
		v := virtualHost{
			Name:            vh.GetName(),
			Domains:         vh.GetDomains(),
			Routes:          []route{},
			RequestHeaders:  convertHeaderOps(vh.GetRequestHeadersToAdd(), vh.GetRequestHeadersToRemove()),
			ResponseHeaders: convertHeaderOps(vh.GetResponseHeadersToAdd(), vh.GetResponseHeadersToRemove()),
			Unsupported:     []string{},
		}
		if v.Domains == nil {
			v.Domains = []string{}
		}
		if vh.GetRetryPolicy() != nil {
			v.Unsupported = append(v.Unsupported, "retry_policy")
		}
		if len(vh.GetTypedPerFilterConfig()) > 0 {
			v.Unsupported = append(v.Unsupported, "typed_per_filter_config")
		}
		if vh.GetRequireTls() != routev3.VirtualHost_NONE {
			v.Unsupported = append(v.Unsupported, "require_tls")
		}
		for _, r := range vh.GetRoutes() {
			v.Routes = append(v.Routes, convertRoute(r, raw))
		}
		out.VirtualHosts = append(out.VirtualHosts, v)
	}
	return out
}

func convertRoute(r *routev3.Route, raw bool) route {
	out := route{
		Name:            r.GetName(),
		Match:           convertMatch(r.GetMatch()),
		RequestHeaders:  convertHeaderOps(r.GetRequestHeadersToAdd(), r.GetRequestHeadersToRemove()),
		ResponseHeaders: convertHeaderOps(r.GetResponseHeadersToAdd(), r.GetResponseHeadersToRemove()),
		PerFilter:       []string{},
		Unsupported:     []string{},
	}
	if md := r.GetMetadata().GetFilterMetadata()["istio"]; md != nil {
		out.Config = md.GetFields()["config"].GetStringValue()
	}
	switch a := r.GetAction().(type) {
	case *routev3.Route_Route:
		out.Action = action{Type: "route", Route: convertRouteAction(a.Route)}
	case *routev3.Route_Redirect:
		out.Action = action{Type: "redirect", Redirect: convertRedirect(a.Redirect)}
	case *routev3.Route_DirectResponse:
		d := &directResponse{Status: a.DirectResponse.GetStatus()}
		if b := a.DirectResponse.GetBody(); b != nil {
			d.Body = b.GetInlineString() + string(b.GetInlineBytes())
		}
		out.Action = action{Type: "directResponse", DirectResponse: d}
	case *routev3.Route_NonForwardingAction:
		out.Action = action{Type: "nonForwarding"}
	case *routev3.Route_FilterAction:
		out.Action = action{Type: "filterAction"}
	default:
		out.Action = action{Type: "none"}
	}
	keys := make([]string, 0, len(r.GetTypedPerFilterConfig()))
	for k := range r.GetTypedPerFilterConfig() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out.PerFilter = append(out.PerFilter, k)
		cfg := r.GetTypedPerFilterConfig()[k]
		switch k {
		case wellknown.CORS:
			out.Cors = convertCors(cfg)
		case wellknown.Fault:
			out.Fault = convertFault(cfg)
		}
	}
	if r.GetTracing() != nil {
		out.Unsupported = append(out.Unsupported, "tracing")
	}
	if raw {
		if b, err := authzJSON.Marshal(r); err == nil {
			out.Raw = b
		}
	}
	return out
}

func convertMatch(m *routev3.RouteMatch) routeMatch {
	out := routeMatch{
		Path:        pathMatch{CaseSensitive: m.GetCaseSensitive() == nil || m.GetCaseSensitive().GetValue()},
		Headers:     []headerMatch{},
		QueryParams: []queryMatch{},
		Unsupported: []string{},
	}
	switch p := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		out.Path.Type, out.Path.Value = "prefix", p.Prefix
	case *routev3.RouteMatch_Path:
		out.Path.Type, out.Path.Value = "exact", p.Path
	case *routev3.RouteMatch_SafeRegex:
		out.Path.Type, out.Path.Value = "regex", p.SafeRegex.GetRegex()
	case *routev3.RouteMatch_PathSeparatedPrefix:
		out.Path.Type, out.Path.Value = "pathSeparatedPrefix", p.PathSeparatedPrefix
	case *routev3.RouteMatch_ConnectMatcher_:
		out.Path.Type = "connect"
	case *routev3.RouteMatch_PathMatchPolicy:
		out.Path.Type = "template"
		out.Unsupported = append(out.Unsupported, "path_match_policy")
	default:
		out.Path.Type = "none"
	}
	for _, h := range m.GetHeaders() {
		out.Headers = append(out.Headers, headerMatch{
			Name:           h.GetName(),
			Match:          convertHeaderSpecifier(h),
			Invert:         h.GetInvertMatch(),
			MissingAsEmpty: h.GetTreatMissingHeaderAsEmpty(),
		})
	}
	for _, q := range m.GetQueryParameters() {
		qm := queryMatch{Name: q.GetName()}
		switch s := q.GetQueryParameterMatchSpecifier().(type) {
		case *routev3.QueryParameterMatcher_StringMatch:
			qm.Match = convertStringMatcher(s.StringMatch)
		case *routev3.QueryParameterMatcher_PresentMatch:
			qm.Match = presence(s.PresentMatch)
		default:
			qm.Match = stringMatch{Type: "present"}
		}
		out.QueryParams = append(out.QueryParams, qm)
	}
	if m.GetRuntimeFraction() != nil {
		out.Unsupported = append(out.Unsupported, "runtime_fraction")
	}
	if m.GetGrpc() != nil {
		out.Unsupported = append(out.Unsupported, "grpc")
	}
	if m.GetTlsContext() != nil {
		out.Unsupported = append(out.Unsupported, "tls_context")
	}
	if len(m.GetDynamicMetadata()) > 0 {
		out.Unsupported = append(out.Unsupported, "dynamic_metadata")
	}
	if len(m.GetFilterState()) > 0 {
		out.Unsupported = append(out.Unsupported, "filter_state")
	}
	if len(m.GetCookies()) > 0 {
		out.Unsupported = append(out.Unsupported, "cookies")
	}
	return out
}

func presence(present bool) stringMatch {
	if present {
		return stringMatch{Type: "present"}
	}
	return stringMatch{Type: "absent"}
}

func convertHeaderSpecifier(h *routev3.HeaderMatcher) stringMatch {
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_StringMatch:
		return convertStringMatcher(s.StringMatch)
	case *routev3.HeaderMatcher_ExactMatch:
		return stringMatch{Type: "exact", Value: s.ExactMatch}
	case *routev3.HeaderMatcher_SafeRegexMatch:
		return stringMatch{Type: "regex", Value: s.SafeRegexMatch.GetRegex()}
	case *routev3.HeaderMatcher_PrefixMatch:
		return stringMatch{Type: "prefix", Value: s.PrefixMatch}
	case *routev3.HeaderMatcher_SuffixMatch:
		return stringMatch{Type: "suffix", Value: s.SuffixMatch}
	case *routev3.HeaderMatcher_ContainsMatch:
		return stringMatch{Type: "contains", Value: s.ContainsMatch}
	case *routev3.HeaderMatcher_PresentMatch:
		return presence(s.PresentMatch)
	case *routev3.HeaderMatcher_RangeMatch:
		return stringMatch{Type: "range", Value: fmt.Sprintf("[%d,%d)", s.RangeMatch.GetStart(), s.RangeMatch.GetEnd())}
	default:
		// No specifier: Envoy matches on presence.
		return stringMatch{Type: "present"}
	}
}

func convertStringMatcher(m *matcherv3.StringMatcher) stringMatch {
	out := stringMatch{IgnoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		out.Type, out.Value = "exact", p.Exact
	case *matcherv3.StringMatcher_Prefix:
		out.Type, out.Value = "prefix", p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		out.Type, out.Value = "suffix", p.Suffix
	case *matcherv3.StringMatcher_Contains:
		out.Type, out.Value = "contains", p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		out.Type, out.Value = "regex", p.SafeRegex.GetRegex()
	default:
		out.Type = "custom"
	}
	return out
}

func convertRouteAction(a *routev3.RouteAction) *routeAction {
	out := &routeAction{Clusters: []weightedCluster{}, Mirrors: []mirror{}, HashPolicy: []json.RawMessage{}, Unsupported: []string{}}
	switch c := a.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		out.Clusters = append(out.Clusters, weightedCluster{Name: c.Cluster, RequestHeaders: emptyOps(), ResponseHeaders: emptyOps()})
	case *routev3.RouteAction_WeightedClusters:
		for _, wc := range c.WeightedClusters.GetClusters() {
			w := wc.GetWeight().GetValue()
			entry := weightedCluster{
				Name:            wc.GetName(),
				Weight:          &w,
				RequestHeaders:  convertHeaderOps(wc.GetRequestHeadersToAdd(), wc.GetRequestHeadersToRemove()),
				ResponseHeaders: convertHeaderOps(wc.GetResponseHeadersToAdd(), wc.GetResponseHeadersToRemove()),
			}
			if h, ok := wc.GetHostRewriteSpecifier().(*routev3.WeightedCluster_ClusterWeight_HostRewriteLiteral); ok {
				entry.HostRewrite = &h.HostRewriteLiteral
			}
			if wc.GetClusterHeader() != "" {
				out.Unsupported = append(out.Unsupported, "weighted_clusters.cluster_header")
			}
			out.Clusters = append(out.Clusters, entry)
		}
		if c.WeightedClusters.GetRuntimeKeyPrefix() != "" {
			out.Unsupported = append(out.Unsupported, "weighted_clusters.runtime_key_prefix")
		}
	case *routev3.RouteAction_ClusterHeader:
		out.ClusterHeader = c.ClusterHeader
	default:
		out.Unsupported = append(out.Unsupported, "cluster_specifier")
	}
	if a.GetPrefixRewrite() != "" {
		p := a.GetPrefixRewrite()
		out.PrefixRewrite = &p
	}
	if rr := a.GetRegexRewrite(); rr != nil {
		out.RegexRewrite = &regexRewrite{Pattern: rr.GetPattern().GetRegex(), Substitution: rr.GetSubstitution()}
	}
	if a.GetPathRewritePolicy() != nil {
		out.Unsupported = append(out.Unsupported, "path_rewrite_policy")
	}
	switch h := a.GetHostRewriteSpecifier().(type) {
	case *routev3.RouteAction_HostRewriteLiteral:
		out.HostRewrite = &h.HostRewriteLiteral
	case *routev3.RouteAction_AutoHostRewrite:
		out.AutoHostRewrite = h.AutoHostRewrite.GetValue()
	case *routev3.RouteAction_HostRewriteHeader:
		out.Unsupported = append(out.Unsupported, "host_rewrite_header")
	case *routev3.RouteAction_HostRewritePathRegex:
		out.Unsupported = append(out.Unsupported, "host_rewrite_path_regex")
	}
	switch a.GetClusterNotFoundResponseCode() {
	case routev3.RouteAction_NOT_FOUND:
		out.ClusterNotFoundStatus = 404
	case routev3.RouteAction_INTERNAL_SERVER_ERROR:
		out.ClusterNotFoundStatus = 500
	default:
		out.ClusterNotFoundStatus = 503
	}
	out.Timeout = duration(a.GetTimeout())
	out.IdleTimeout = duration(a.GetIdleTimeout())
	if rp := a.GetRetryPolicy(); rp != nil {
		out.Retry = convertRetry(rp)
	}
	for _, m := range a.GetRequestMirrorPolicies() {
		mm := mirror{Cluster: m.GetCluster(), Percent: 100}
		if rf := m.GetRuntimeFraction(); rf != nil {
			mm.Percent = percent(rf.GetDefaultValue())
		}
		if m.GetTraceSampled() != nil {
			v := m.GetTraceSampled().GetValue()
			mm.TraceSampled = &v
		}
		if m.GetClusterHeader() != "" {
			out.Unsupported = append(out.Unsupported, "request_mirror_policies.cluster_header")
		}
		out.Mirrors = append(out.Mirrors, mm)
	}
	for _, h := range a.GetHashPolicy() {
		if b, err := authzJSON.Marshal(h); err == nil {
			out.HashPolicy = append(out.HashPolicy, b)
		}
	}
	if a.GetMaxStreamDuration() != nil {
		msd := a.GetMaxStreamDuration()
		if msd.GetMaxStreamDuration() != nil || msd.GetGrpcTimeoutHeaderMax() != nil || msd.GetGrpcTimeoutHeaderOffset() != nil {
			out.Unsupported = append(out.Unsupported, "max_stream_duration")
		}
	}
	if a.GetCors() != nil {
		out.Unsupported = append(out.Unsupported, "cors (deprecated route-action field)")
	}
	return out
}

func convertRetry(rp *routev3.RetryPolicy) *retryPolicy {
	out := &retryPolicy{
		RetryOn:                  rp.GetRetryOn(),
		PerTryTimeout:            duration(rp.GetPerTryTimeout()),
		RetriableStatusCodes:     rp.GetRetriableStatusCodes(),
		HostPredicates:           []string{},
		HostSelectionMaxAttempts: rp.GetHostSelectionRetryMaxAttempts(),
		Unsupported:              []string{},
	}
	if out.RetriableStatusCodes == nil {
		out.RetriableStatusCodes = []uint32{}
	}
	if rp.GetNumRetries() != nil {
		n := rp.GetNumRetries().GetValue()
		out.NumRetries = &n
	}
	for _, p := range rp.GetRetryHostPredicate() {
		out.HostPredicates = append(out.HostPredicates, p.GetName())
	}
	if b := rp.GetRetryBackOff(); b != nil {
		out.BackoffBase = duration(b.GetBaseInterval())
		out.BackoffMax = duration(b.GetMaxInterval())
	}
	if rp.GetRetryPriority() != nil {
		out.Unsupported = append(out.Unsupported, "retry_priority")
	}
	if len(rp.GetRetriableHeaders()) > 0 || len(rp.GetRetriableRequestHeaders()) > 0 {
		out.Unsupported = append(out.Unsupported, "retriable_headers")
	}
	if rp.GetPerTryIdleTimeout() != nil {
		out.Unsupported = append(out.Unsupported, "per_try_idle_timeout")
	}
	return out
}

func convertRedirect(r *routev3.RedirectAction) *redirectAction {
	out := &redirectAction{Host: r.GetHostRedirect(), Port: r.GetPortRedirect(), StripQuery: r.GetStripQuery()}
	switch s := r.GetSchemeRewriteSpecifier().(type) {
	case *routev3.RedirectAction_HttpsRedirect:
		if s.HttpsRedirect {
			out.Scheme = "https"
		}
	case *routev3.RedirectAction_SchemeRedirect:
		out.Scheme = s.SchemeRedirect
	}
	switch p := r.GetPathRewriteSpecifier().(type) {
	case *routev3.RedirectAction_PathRedirect:
		out.Path = &p.PathRedirect
	case *routev3.RedirectAction_PrefixRewrite:
		out.PrefixRewrite = &p.PrefixRewrite
	case *routev3.RedirectAction_RegexRewrite:
		out.RegexRewrite = &regexRewrite{Pattern: p.RegexRewrite.GetPattern().GetRegex(), Substitution: p.RegexRewrite.GetSubstitution()}
	}
	switch r.GetResponseCode() {
	case routev3.RedirectAction_MOVED_PERMANENTLY:
		out.Code = 301
	case routev3.RedirectAction_FOUND:
		out.Code = 302
	case routev3.RedirectAction_SEE_OTHER:
		out.Code = 303
	case routev3.RedirectAction_TEMPORARY_REDIRECT:
		out.Code = 307
	case routev3.RedirectAction_PERMANENT_REDIRECT:
		out.Code = 308
	}
	return out
}

func emptyOps() headerOps { return headerOps{Add: []headerValue{}, Remove: []string{}} }

func convertHeaderOps(add []*corev3.HeaderValueOption, remove []string) headerOps {
	out := emptyOps()
	for _, h := range add {
		action := "append"
		if h.GetAppend() != nil {
			if !h.GetAppend().GetValue() {
				action = "overwrite"
			}
		} else {
			switch h.GetAppendAction() {
			case corev3.HeaderValueOption_ADD_IF_ABSENT:
				action = "addIfAbsent"
			case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
				action = "overwrite"
			case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
				action = "overwriteIfExists"
			}
		}
		value := h.GetHeader().GetValue()
		if value == "" && len(h.GetHeader().GetRawValue()) > 0 {
			value = string(h.GetHeader().GetRawValue())
		}
		out.Add = append(out.Add, headerValue{Name: h.GetHeader().GetKey(), Value: value, Action: action})
	}
	if remove != nil {
		out.Remove = append(out.Remove, remove...)
	}
	return out
}

func convertCors(a *anypb.Any) *cors {
	p := &corsv3.CorsPolicy{}
	if err := a.UnmarshalTo(p); err != nil {
		return &cors{AllowOrigins: []stringMatch{}, Other: map[string]bool{"undecodable": true}}
	}
	out := &cors{
		AllowOrigins:  []stringMatch{},
		AllowMethods:  p.GetAllowMethods(),
		AllowHeaders:  p.GetAllowHeaders(),
		ExposeHeaders: p.GetExposeHeaders(),
		MaxAge:        p.GetMaxAge(),
	}
	for _, o := range p.GetAllowOriginStringMatch() {
		out.AllowOrigins = append(out.AllowOrigins, convertStringMatcher(o))
	}
	if p.GetAllowCredentials() != nil {
		v := p.GetAllowCredentials().GetValue()
		out.AllowCredentials = &v
	}
	if fe := p.GetFilterEnabled(); fe != nil {
		v := percent(fe.GetDefaultValue())
		out.FilterEnabled = &v
	}
	if se := p.GetShadowEnabled(); se != nil {
		v := percent(se.GetDefaultValue())
		out.ShadowEnabled = &v
	}
	other := map[string]bool{}
	if p.GetAllowPrivateNetworkAccess() != nil {
		other["allowPrivateNetworkAccess"] = p.GetAllowPrivateNetworkAccess().GetValue()
	}
	if p.GetForwardNotMatchingPreflights() != nil {
		other["forwardNotMatchingPreflights"] = p.GetForwardNotMatchingPreflights().GetValue()
	}
	if len(other) > 0 {
		out.Other = other
	}
	return out
}

func convertFault(a *anypb.Any) *fault {
	f := &faultv3.HTTPFault{}
	out := &fault{Unsupported: []string{}}
	if err := a.UnmarshalTo(f); err != nil {
		out.Unsupported = append(out.Unsupported, "undecodable")
		return out
	}
	if d := f.GetDelay(); d != nil {
		if fd := d.GetFixedDelay(); fd != nil {
			out.DelayFixed = fd.AsDuration().String()
		} else {
			out.Unsupported = append(out.Unsupported, "delay (not fixed)")
		}
		v := percent(d.GetPercentage())
		out.DelayPercent = &v
	}
	if ab := f.GetAbort(); ab != nil {
		out.AbortStatus = ab.GetHttpStatus()
		out.AbortGrpc = ab.GetGrpcStatus()
		if ab.GetHeaderAbort() != nil {
			out.Unsupported = append(out.Unsupported, "abort (header)")
		}
		v := percent(ab.GetPercentage())
		out.AbortPercent = &v
	}
	return out
}

func percent(p *typev3.FractionalPercent) float64 {
	if p == nil {
		return 100
	}
	n := float64(p.GetNumerator())
	switch p.GetDenominator() {
	case typev3.FractionalPercent_TEN_THOUSAND:
		return n / 100
	case typev3.FractionalPercent_MILLION:
		return n / 10000
	default:
		return n
	}
}

func duration(d *durationpb.Duration) *string {
	if d == nil {
		return nil
	}
	s := d.AsDuration().Round(time.Microsecond).String()
	return &s
}
