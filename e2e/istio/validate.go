package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/hashicorp/go-multierror"

	"istio.io/istio/pilot/pkg/config/kube/crd"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/schema/collections"
	"istio.io/istio/pkg/config/schema/resource"
)

// verdict is one entry of `validate`'s output. Checked objects have Valid,
// Errors and Warnings; skipped ones have Skipped and Reason.
type verdict struct {
	APIVersion string    `json:"apiVersion"`
	Kind       string    `json:"kind"`
	Namespace  string    `json:"namespace"`
	Name       string    `json:"name"`
	Valid      *bool     `json:"valid,omitempty"`
	Errors     *[]string `json:"errors,omitempty"`
	Warnings   *[]string `json:"warnings,omitempty"`
	Skipped    bool      `json:"skipped,omitempty"`
	Reason     string    `json:"reason,omitempty"`
}

func parseValidate(args []string) (command, error) {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	domain := fs.String("domain-suffix", "cluster.local", "istiod's --domain (only ServiceEntry/DestinationRule host checks look at it)")
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	return func(objects []json.RawMessage) (any, error) { return validateAll(objects, *domain) }, nil
}

func validateAll(objects []json.RawMessage, domain string) ([]verdict, error) {
	// The schemas istiod's validating webhook serves (pilot/pkg/bootstrap/validation.go).
	schemas := collections.PilotGatewayAPI()
	out := make([]verdict, 0, len(objects))
	for i, raw := range objects {
		v, err := validateOne(schemas.FindByGroupKind, raw, domain)
		if err != nil {
			return nil, fmt.Errorf("object %d: %w", i+1, err)
		}
		out = append(out, v)
	}
	return out, nil
}

func validateOne(find func(config.GroupVersionKind) (resource.Schema, bool), raw json.RawMessage, domain string) (verdict, error) {
	m, err := objectMeta(raw)
	if err != nil {
		return verdict{}, err
	}
	v := verdict{APIVersion: m.APIVersion, Kind: m.Kind, Namespace: m.Metadata.Namespace, Name: m.Metadata.Name}
	var obj crd.IstioKind
	if err := json.Unmarshal(raw, &obj); err != nil {
		return verdict{}, fmt.Errorf("decoding %s %s: %w", m.Kind, m.Metadata.Name, err)
	}
	gvk := obj.GroupVersionKind()
	// Like the webhook, ignore the version: every served version has one schema.
	schema, found := find(resource.FromKubernetesGVK(&gvk))
	switch {
	case !found:
		v.Skipped = true
		v.Reason = fmt.Sprintf("Istio does not validate %s: istiod's webhook has no schema for it", describe(m))
		return v, nil
	case !strings.HasSuffix(schema.Group(), "istio.io"):
		// Istio registers Gateway API schemas with validation.EmptyValidate (see
		// pkg/config/schema/collections/collections.gen.go): it never rejects them,
		// and its webhook only covers istio.io groups. Their CRD schema and CEL
		// rules are the validators, so an "accepted" here would be meaningless.
		v.Skipped = true
		v.Reason = fmt.Sprintf("Istio has a schema for %s but no validation for it (EmptyValidate); the CRD's own schema validates it", describe(m))
		return v, nil
	}
	errs, warnings := check(schema, &obj, domain)
	valid := len(errs) == 0
	v.Valid, v.Errors, v.Warnings = &valid, &errs, &warnings
	return v, nil
}

// check is the webhook's path (pkg/webhooks/validation/server): convert the
// object with the schema, then the schema's ValidateConfig. Conversion is
// strict about unknown spec fields, like `istioctl validate` and like the API
// server with kubectl's default field validation, so a typo is an error here
// (the webhook alone would drop the field).
func check(schema resource.Schema, obj *crd.IstioKind, domain string) (errs, warnings []string) {
	errs, warnings = []string{}, []string{}
	if obj.Namespace == "" {
		// As istioctl validate: validity can depend on the namespace (exportTo ".").
		obj.Namespace = "default"
	}
	cfg, err := crd.ConvertObjectInternal(schema, obj, domain, strictFromJSON)
	if err != nil {
		return []string{fmt.Sprintf("cannot decode spec: %v", err)}, warnings
	}
	warn, err := schema.ValidateConfig(*cfg)
	return flatten(err), flatten(warn)
}

func strictFromJSON(s resource.Schema, js string) (config.Spec, error) {
	spec, err := s.NewInstance()
	if err != nil {
		return nil, err
	}
	return spec, config.ApplyJSONStrict(spec, js)
}

// flatten turns Istio's multierror into one string per problem.
func flatten(err error) []string {
	out := []string{}
	if err == nil {
		return out
	}
	var me *multierror.Error
	if errors.As(err, &me) {
		if me == nil {
			return out // a typed nil *multierror.Error: no problem at all
		}
		for _, e := range me.Errors {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return append(out, err.Error())
}

func describe(m meta) string {
	if m.APIVersion == "" {
		return m.Kind
	}
	return m.APIVersion + "/" + m.Kind
}
