package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	meshconfig "istio.io/api/mesh/v1alpha1"
	securityclient "istio.io/client-go/pkg/apis/security/v1"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/pkg/security/authz/builder"
	"istio.io/istio/pilot/pkg/security/trustdomain"
	"istio.io/istio/pilot/pkg/serviceregistry/provider"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/labels"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/config/mesh/meshwatcher"
	"istio.io/istio/pkg/config/schema/gvk"
	"istio.io/istio/pkg/kube/krt"
)

// rbacResult is `rbac`'s output: which policies istiod attaches to the proxy,
// and the filters it builds from them, in the order istiod puts them in a
// filter chain (CUSTOM's ext_authz before the RBAC filters of AUDIT, DENY, ALLOW).
type rbacResult struct {
	Policies selected `json:"policies"`
	// HTTP filters of an HTTP filter chain (envoy.filters.http.rbac / ext_authz).
	HTTP []json.RawMessage `json:"http"`
	// Network filters of a TCP filter chain (envoy.filters.network.rbac / ext_authz).
	TCP []json.RawMessage `json:"tcp"`
}

// selected names the attached policies ("namespace/name") per action, in
// istiod's order (root namespace first, then by creation time and name).
type selected struct {
	Allow  []string `json:"allow"`
	Deny   []string `json:"deny"`
	Audit  []string `json:"audit"`
	Custom []string `json:"custom"`
}

type rbacFlags struct {
	proxy, namespace, labels, gateway, service string
	rootNamespace, trustDomain, aliases        string
}

func parseRBAC(args []string) (command, error) {
	var f rbacFlags
	fs := flag.NewFlagSet("rbac", flag.ContinueOnError)
	fs.StringVar(&f.proxy, "for", "", "sidecar (an inbound sidecar) or waypoint (a waypoint's per-Service chain)")
	fs.StringVar(&f.namespace, "namespace", "", "namespace of the sidecar's workload or of the waypoint")
	fs.StringVar(&f.labels, "labels", "", "sidecar: the workload's labels, k=v,k=v (selectors match against them)")
	fs.StringVar(&f.gateway, "gateway", "", "waypoint: name of its Gateway (targetRefs kind Gateway)")
	fs.StringVar(&f.service, "service", "", "waypoint: the Service being served, name or namespace/name (targetRefs kind Service)")
	fs.StringVar(&f.rootNamespace, "root-namespace", "istio-system", "MeshConfig rootNamespace")
	fs.StringVar(&f.trustDomain, "trust-domain", "cluster.local", "MeshConfig trustDomain")
	fs.StringVar(&f.aliases, "trust-domain-aliases", "", "MeshConfig trustDomainAliases, comma-separated")
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	matcher, err := f.matcher()
	if err != nil {
		return nil, err
	}
	meshConfig := mesh.DefaultMeshConfig()
	meshConfig.RootNamespace = f.rootNamespace
	meshConfig.TrustDomain = f.trustDomain
	meshConfig.TrustDomainAliases = splitList(f.aliases)
	return func(objects []json.RawMessage) (any, error) {
		return rbacFor(objects, matcher, meshConfig, f.proxy == "waypoint")
	}, nil
}

func rbacFor(objects []json.RawMessage, matcher model.WorkloadPolicyMatcher, meshConfig *meshconfig.MeshConfig, waypoint bool) (rbacResult, error) {
	policies, err := decodeAuthorizationPolicies(objects)
	if err != nil {
		return rbacResult{}, err
	}
	all, err := authorizationPolicies(policies, meshConfig)
	if err != nil {
		return rbacResult{}, err
	}
	attached := all.ListAuthorizationPolicies(matcher.WithRootNamespace(all.RootNamespace))
	return build(attached, meshConfig, waypoint)
}

// matcher is the selection istiod makes for the proxy (model.PolicyMatcherForProxy):
// selectors for a sidecar, targetRefs for a waypoint.
func (f rbacFlags) matcher() (model.WorkloadPolicyMatcher, error) {
	if f.namespace == "" {
		return model.WorkloadPolicyMatcher{}, errors.New("--namespace is required")
	}
	switch f.proxy {
	case "sidecar":
		if f.gateway != "" || f.service != "" {
			return model.WorkloadPolicyMatcher{}, errors.New("--gateway and --service are for --for waypoint")
		}
		l, err := parseLabels(f.labels)
		if err != nil {
			return model.WorkloadPolicyMatcher{}, err
		}
		return model.PolicyMatcherFor(f.namespace, l, false), nil
	case "waypoint":
		if f.gateway == "" || f.labels != "" {
			return model.WorkloadPolicyMatcher{}, errors.New("--for waypoint takes --gateway (and --service), not --labels")
		}
		// A waypoint's pods carry this label; it is how istiod finds the Gateway.
		l := labels.Instance{"gateway.networking.k8s.io/gateway-name": f.gateway}
		m := model.PolicyMatcherFor(f.namespace, l, true)
		if f.service != "" {
			ns, name, ok := strings.Cut(f.service, "/")
			if !ok {
				ns, name = f.namespace, f.service
			}
			m.Services = []model.ServiceInfoForPolicyMatcher{{Name: name, Namespace: ns, Registry: provider.Kubernetes}}
		}
		return m, nil
	default:
		return model.WorkloadPolicyMatcher{}, fmt.Errorf("--for must be sidecar or waypoint, not %q", f.proxy)
	}
}

// authorizationPolicies is istiod's per-namespace index of the policies
// (model.GetAuthorizationPolicies over a config store holding them).
func authorizationPolicies(policies []*securityclient.AuthorizationPolicy, meshConfig *meshconfig.MeshConfig) (*model.AuthorizationPolicies, error) {
	store := model.NewFakeStore()
	for _, p := range policies {
		cfg := config.Config{
			Meta: config.Meta{
				GroupVersionKind:  gvk.AuthorizationPolicy,
				Name:              p.Name,
				Namespace:         p.Namespace,
				Labels:            p.Labels,
				Annotations:       p.Annotations,
				CreationTimestamp: p.CreationTimestamp.Time,
			},
			Spec: &p.Spec,
		}
		if _, err := store.Create(cfg); err != nil {
			return nil, fmt.Errorf("storing AuthorizationPolicy %s/%s: %w", p.Namespace, p.Name, err)
		}
	}
	env := &model.Environment{
		ConfigStore: store,
		Watcher:     meshwatcher.ConfigAdapter(krt.NewStatic(&meshwatcher.MeshConfigResource{MeshConfig: meshConfig}, true)),
	}
	return model.GetAuthorizationPolicies(env), nil
}

// build runs istiod's authz builder as its listener code does
// (pilot/pkg/networking/plugin/authz): a sidecar's mTLS inbound chains match
// principals from the connection, a waypoint's from filter state (the HBONE
// peer), which is builder.Option.UseFilterState.
func build(attached model.AuthorizationPoliciesResult, meshConfig *meshconfig.MeshConfig, waypoint bool) (rbacResult, error) {
	push := model.NewPushContext()
	push.Mesh = meshConfig // CUSTOM reads its extension providers from here
	bundle := trustdomain.NewBundle(meshConfig.TrustDomain, meshConfig.TrustDomainAliases)
	custom := builder.New(bundle, push, attached, builder.Option{IsCustomBuilder: true, UseFilterState: waypoint})
	local := builder.New(bundle, push, attached, builder.Option{UseFilterState: waypoint})

	res := rbacResult{Policies: names(attached), HTTP: []json.RawMessage{}, TCP: []json.RawMessage{}}
	for _, b := range []*builder.Builder{custom, local} {
		if b == nil {
			continue // nil when no policy of its kind is attached
		}
		http, err := marshalAll(b.BuildHTTP())
		if err != nil {
			return res, err
		}
		tcp, err := marshalAll(b.BuildTCP())
		if err != nil {
			return res, err
		}
		res.HTTP = append(res.HTTP, http...)
		res.TCP = append(res.TCP, tcp...)
	}
	return res, nil
}

func names(r model.AuthorizationPoliciesResult) selected {
	list := func(ps []model.AuthorizationPolicy) []string {
		out := make([]string, 0, len(ps))
		for _, p := range ps {
			out = append(out, p.Namespace+"/"+p.Name)
		}
		return out
	}
	return selected{Allow: list(r.Allow), Deny: list(r.Deny), Audit: list(r.Audit), Custom: list(r.Custom)}
}

// marshalAll encodes filters (their typed_config is an Any, resolved from the
// Envoy types the builder links in) with the same options as `ztunnel`.
func marshalAll[T proto.Message](filters []T) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, 0, len(filters))
	for _, f := range filters {
		js, err := authzJSON.Marshal(f)
		if err != nil {
			return nil, fmt.Errorf("encoding a filter: %w", err)
		}
		out = append(out, js)
	}
	return out, nil
}

func parseLabels(s string) (labels.Instance, error) {
	l := labels.Instance{}
	for _, kv := range splitList(s) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("--labels: %q is not key=value", kv)
		}
		l[k] = v
	}
	return l, nil
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}
