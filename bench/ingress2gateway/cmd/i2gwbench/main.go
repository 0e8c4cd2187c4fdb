// Command i2gwbench times ingress2gateway's Istio provider in-process on one input file:
// reading the file once, then converting it (ToIR + ToGatewayResources) -repeat times. It
// prints one JSON line, the counterpart of `meshmig-bench convert-run`.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/kubernetes-sigs/ingress2gateway/pkg/i2gw"
	"github.com/kubernetes-sigs/ingress2gateway/pkg/i2gw/providers/istio"
)

type result struct {
	VirtualServices int       `json:"virtual_services"`
	Routes          int       `json:"routes"`
	Gateways        int       `json:"gateways"`
	RepeatsS        []float64 `json:"repeats_s"`
	LoadS           float64   `json:"load_s"`
	Errors          int       `json:"errors"`
}

func main() {
	input := flag.String("input-file", "", "Istio Gateways and VirtualServices (YAML)")
	repeat := flag.Int("repeat", 5, "conversions of the whole input, timed one by one")
	vsCount := flag.Int("virtual-services", 0, "VirtualServices in the input (reported as is)")
	flag.Parse()
	if *input == "" {
		fmt.Fprintln(os.Stderr, "i2gwbench: -input-file is required")
		os.Exit(2)
	}
	// The provider logs every object it skips; keep the timing about conversion.
	log.SetOutput(io.Discard)
	p := istio.NewProvider(&i2gw.ProviderConf{})
	start := time.Now()
	if err := p.ReadResourcesFromFile(context.Background(), *input); err != nil {
		fmt.Fprintf(os.Stderr, "i2gwbench: %v\n", err)
		os.Exit(1)
	}
	res := result{VirtualServices: *vsCount, LoadS: time.Since(start).Seconds()}
	for i := 0; i < *repeat; i++ {
		t := time.Now()
		ir, errs := p.ToIR()
		out, errs2 := p.ToGatewayResources(ir)
		res.RepeatsS = append(res.RepeatsS, time.Since(t).Seconds())
		res.Routes = len(out.HTTPRoutes)
		res.Gateways = len(out.Gateways)
		res.Errors = len(errs) + len(errs2)
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		os.Exit(1)
	}
}
