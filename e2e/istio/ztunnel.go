package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"k8s.io/apimachinery/pkg/types"

	meshconfig "istio.io/api/mesh/v1alpha1"
	securityclient "istio.io/client-go/pkg/apis/security/v1"
	"istio.io/istio/pilot/pkg/features"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/pkg/serviceregistry/ambient"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/kube/krt"
)

// conversion is one entry of `ztunnel`'s output, for one input AuthorizationPolicy.
type conversion struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// The istio.security.Authorization istiod sends to ztunnel (protojson), or
	// null when it sends none.
	Authorization json.RawMessage `json:"authorization"`
	// The ZtunnelAccepted condition istiod writes to the policy, or null when
	// it writes none.
	Status *condition `json:"status"`
}

type condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"` // "True" or "False", as in the Kubernetes condition
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// The encoding the brief fixes for the Rust side: snake_case field names and
// enums by name, zero values omitted.
var authzJSON = protojson.MarshalOptions{UseProtoNames: true, UseEnumNumbers: false, EmitUnpopulated: false}

func parseZtunnel(args []string) (command, error) {
	fs := flag.NewFlagSet("ztunnel", flag.ContinueOnError)
	rootNamespace := fs.String("root-namespace", "istio-system", "MeshConfig rootNamespace: its namespace-wide policies are mesh-wide (scope GLOBAL)")
	trustDomain := fs.String("trust-domain", "cluster.local", "MeshConfig trustDomain")
	// Istio reads this from AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY, but only
	// when PILOT_ENABLE_AMBIENT=true is set too; the flag sets the same exported
	// variable directly. Its default is whatever the environment gave Istio.
	fs.BoolVar(&features.EnableWdsDryRunAuthzPol, "enable-dry-run-authorization-policy", features.EnableWdsDryRunAuthzPol,
		"AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY: send istio.io/dry-run policies to ztunnel as dry_run instead of rejecting them")
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	meshConfig := mesh.DefaultMeshConfig()
	meshConfig.RootNamespace = *rootNamespace
	meshConfig.TrustDomain = *trustDomain
	return func(objects []json.RawMessage) (any, error) { return convertAll(objects, meshConfig) }, nil
}

func convertAll(objects []json.RawMessage, meshConfig *meshconfig.MeshConfig) ([]conversion, error) {
	policies, err := decodeAuthorizationPolicies(objects)
	if err != nil {
		return nil, err
	}
	converted, err := convert(policies, meshConfig)
	if err != nil {
		return nil, err
	}
	// The output collection is keyed by the Authorization's namespace/name, so
	// every policy istiod converts to a status only (no Authorization: CUSTOM,
	// AUDIT, dry-run) has the key "/" and all but one are lost in a batch (as in
	// istiod itself). Conversion depends on nothing but the policy and the
	// MeshConfig, so convert the missing ones one at a time.
	for _, p := range policies {
		if _, ok := converted[key(p)]; ok {
			continue
		}
		one, err := convert([]*securityclient.AuthorizationPolicy{p}, meshConfig)
		if err != nil {
			return nil, err
		}
		if wa, ok := one[key(p)]; ok {
			converted[key(p)] = wa
		}
	}

	out := make([]conversion, 0, len(policies))
	for _, p := range policies {
		c, err := toConversion(p, converted)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func decodeAuthorizationPolicies(objects []json.RawMessage) ([]*securityclient.AuthorizationPolicy, error) {
	policies := make([]*securityclient.AuthorizationPolicy, 0, len(objects))
	seen := map[types.NamespacedName]bool{}
	for i, raw := range objects {
		m, err := objectMeta(raw)
		if err != nil {
			return nil, fmt.Errorf("object %d: %w", i+1, err)
		}
		if m.Kind != "AuthorizationPolicy" {
			return nil, fmt.Errorf("object %d (%s %s) is not an AuthorizationPolicy", i+1, m.Kind, m.Metadata.Name)
		}
		// security.istio.io v1 and v1beta1 share one schema; istiod reads both as v1.
		var p securityclient.AuthorizationPolicy
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, fmt.Errorf("object %d (AuthorizationPolicy %s/%s): %w", i+1, m.Metadata.Namespace, m.Metadata.Name, err)
		}
		p.APIVersion, p.Kind = "security.istio.io/v1", "AuthorizationPolicy"
		if p.Namespace == "" {
			return nil, fmt.Errorf("object %d (AuthorizationPolicy %s) has no namespace: its scope depends on it", i+1, p.Name)
		}
		if seen[key(&p)] {
			return nil, fmt.Errorf("object %d: AuthorizationPolicy %s/%s appears twice", i+1, p.Namespace, p.Name)
		}
		seen[key(&p)] = true
		policies = append(policies, &p)
	}
	return policies, nil
}

// convert runs istiod's ambient policy collections over static inputs: the
// policies, no PeerAuthentications, no waypoints, and the MeshConfig. The
// result is keyed by the policy each entry came from.
func convert(policies []*securityclient.AuthorizationPolicy, meshConfig *meshconfig.MeshConfig) (map[types.NamespacedName]model.WorkloadAuthorization, error) {
	stop := make(chan struct{})
	defer close(stop) // stops krt's goroutines
	opts := krt.NewOptionsBuilder(stop, "meshmig-istio", nil)
	authz := krt.NewStaticCollection(nil, policies, opts.WithName("AuthorizationPolicies")...)
	peers := krt.NewStaticCollection[*securityclient.PeerAuthentication](nil, nil, opts.WithName("PeerAuthentications")...)
	waypoints := krt.NewStaticCollection[ambient.Waypoint](nil, nil, opts.WithName("Waypoints")...)
	meshCfg := krt.NewStatic(&ambient.MeshConfig{MeshConfig: meshConfig}, true, opts.WithName("MeshConfig")...)

	derived, _ := ambient.PolicyCollections(authz, peers, meshCfg, waypoints, opts, ambient.FeatureFlags{})
	if !derived.WaitUntilSynced(stop) {
		return nil, errors.New("istiod's policy collection never synced")
	}
	out := make(map[types.NamespacedName]model.WorkloadAuthorization, len(policies))
	for _, wa := range derived.List() {
		out[wa.Source.NamespacedName] = wa
	}
	return out, nil
}

func key(p *securityclient.AuthorizationPolicy) types.NamespacedName {
	return types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
}

func toConversion(p *securityclient.AuthorizationPolicy, converted map[types.NamespacedName]model.WorkloadAuthorization) (conversion, error) {
	c := conversion{Namespace: p.Namespace, Name: p.Name, Authorization: json.RawMessage("null")}
	wa, ok := converted[key(p)]
	if !ok {
		return c, nil // istiod ignores it entirely (targetRefs policies: not for ztunnel)
	}
	if wa.Authorization != nil {
		js, err := authzJSON.Marshal(wa.Authorization)
		if err != nil {
			return c, fmt.Errorf("encoding the Authorization of %s/%s: %w", p.Namespace, p.Name, err)
		}
		c.Authorization = js
	}
	// The condition istiod's status queue writes for this entry.
	if cond := wa.GetConditions(nil)[model.ZtunnelAccepted]; cond != nil {
		status := "False"
		if cond.Status {
			status = "True"
		}
		c.Status = &condition{Type: string(model.ZtunnelAccepted), Status: status, Reason: cond.Reason, Message: cond.Message}
	}
	return c, nil
}
