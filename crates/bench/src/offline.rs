//! Offline benchmarks: loading and planning at 100 / 1,000 / 5,000 namespaces (each run a
//! child process, for its own peak RSS), and VirtualService → HTTPRoute conversion with
//! meshmig and with ingress2gateway's Istio provider on the same routes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;
use crate::measure::{ConvertRun, PlanRun};
use crate::synth::{self, Options, Variant};

/// Arguments of `meshmig-bench offline`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where corpora are written.
    #[arg(long, default_value = "target/bench")]
    pub work_dir: PathBuf,
    /// Result file (JSON).
    #[arg(long, default_value = "target/bench/offline.json")]
    pub results: PathBuf,
    /// Corpus sizes (namespaces) for loading and planning.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    pub sizes: Vec<usize>,
    /// Runs per size (child processes); sizes whose first run takes longer than
    /// --slow-seconds get 3.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// See --runs.
    #[arg(long, default_value_t = 20.0)]
    pub slow_seconds: f64,
    /// Corpus size (namespaces) of the conversion benchmark.
    #[arg(long, default_value_t = 1000)]
    pub convert_size: usize,
    /// Timed conversions of the whole corpus per tool.
    #[arg(long, default_value_t = 5)]
    pub convert_repeats: usize,
    /// Runs of the end-to-end (process) comparison per tool.
    #[arg(long, default_value_t = 3)]
    pub e2e_runs: usize,
    /// PRNG seed of the corpora.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output of bench/ingress2gateway/build.sh (bin/ingress2gateway, bin/i2gwbench);
    /// without it the comparison is skipped.
    #[arg(long)]
    pub i2gw_home: Option<PathBuf>,
}

/// Load-and-plan runs of one size.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct PlanSize {
    pub namespaces: usize,
    /// Format of the corpus file: `YAML` (one document per object) or `JSON` (one List).
    #[serde(default = "yaml")]
    pub format: String,
    /// Corpus file.
    pub file: String,
    pub runs: Vec<PlanRun>,
}

fn yaml() -> String {
    "YAML".into()
}

/// ingress2gateway's in-process figures (`i2gwbench`).
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct I2gwRun {
    /// VirtualServices in its input.
    pub virtual_services: usize,
    /// HTTPRoutes produced.
    pub routes: usize,
    /// Gateways produced.
    pub gateways: usize,
    /// Seconds of each conversion.
    pub repeats_s: Vec<f64>,
    /// Reading its input (s).
    pub load_s: f64,
    /// Conversion errors reported.
    pub errors: usize,
}

/// The conversion comparison.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Convert {
    /// Namespaces of the corpus.
    pub namespaces: usize,
    /// meshmig, in-process.
    pub meshmig: ConvertRun,
    /// ingress2gateway, in-process.
    pub i2gw: Option<I2gwRun>,
    /// Wall time of `meshmig-bench convert-run --print` (load + convert + print YAML) (s).
    pub meshmig_process_s: Vec<f64>,
    /// Wall time of `ingress2gateway print --providers=istio --input-file` (s).
    pub i2gw_process_s: Vec<f64>,
    /// Bytes of meshmig's input (Services, DestinationRules, VirtualServices).
    pub meshmig_input_bytes: u64,
    /// Bytes of ingress2gateway's input (Istio Gateways, VirtualServices).
    pub i2gw_input_bytes: u64,
    /// `module@version` of ingress2gateway.
    pub i2gw_version: Option<String>,
}

/// Everything `offline` measured.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Offline {
    /// Seed of the corpora.
    pub seed: u64,
    /// Planner runs by size.
    pub plan: Vec<PlanSize>,
    /// Conversion.
    pub convert: Option<Convert>,
}

fn self_exe() -> Result<PathBuf, Error> {
    std::env::current_exe().map_err(|e| Error::io(Path::new("current_exe"), e))
}

/// Runs a command, returning its stdout; a failure names the command and its stderr.
pub fn output(cmd: &mut Command) -> Result<String, Error> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Msg(format!("{shown}: {e}")))?;
    if !out.status.success() {
        return Err(Error::Msg(format!(
            "{shown}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Wall time of a command with its stdout discarded.
fn timed(cmd: &mut Command) -> Result<f64, Error> {
    let shown = format!("{cmd:?}");
    let t = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::Msg(format!("{shown}: {e}")))?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(Error::Msg(format!(
            "{shown}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(secs)
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, Error> {
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(line).map_err(|e| Error::Msg(format!("{what}: {e}: {text:?}")))
}

fn write_yaml(path: &Path, objects: &[Value]) -> Result<u64, Error> {
    let text = synth::to_yaml(objects).map_err(Error::Msg)?;
    std::fs::write(path, &text).map_err(|e| Error::io(path, e))?;
    Ok(text.len() as u64)
}

fn write_json_list(path: &Path, objects: Vec<Value>) -> Result<u64, Error> {
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
    let text = serde_json::to_string_pretty(&list).map_err(|e| Error::Msg(e.to_string()))?;
    std::fs::write(path, &text).map_err(|e| Error::io(path, e))?;
    Ok(text.len() as u64)
}

/// Load-and-plan runs of one corpus file, each in a child process.
fn plan_runs(b: &Bench<'_>, n: usize, corpus: &Corpus<'_>) -> Result<PlanSize, Error> {
    let (args, format, file) = (b.args, corpus.format, corpus.file);
    let mut size = PlanSize {
        namespaces: n,
        format: format.to_string(),
        file: file.display().to_string(),
        runs: Vec::new(),
    };
    let mut runs = args.runs.max(1);
    let mut i = 0;
    while i < runs {
        let out = output(Command::new(b.exe).arg("plan-run").arg(file))?;
        let r: PlanRun = parse("plan-run", &out)?;
        eprintln!(
            "offline:   {format} run {}: load {:.3} s, plan {:.3} s, peak RSS {:.0} MiB",
            i + 1,
            r.load_s,
            r.plan_s,
            r.peak_rss as f64 / 1048576.0
        );
        if i == 0 && r.read_s + r.load_s + r.plan_s > args.slow_seconds {
            runs = runs.min(3);
        }
        size.runs.push(r);
        i += 1;
    }
    Ok(size)
}

/// What every benchmark run needs: this binary (runs are its child processes) and the
/// arguments.
struct Bench<'a> {
    exe: &'a Path,
    args: &'a Args,
}

/// One corpus file and its format.
struct Corpus<'a> {
    format: &'a str,
    file: &'a Path,
}

/// Runs the offline benchmarks and writes their results.
pub fn run(args: &Args) -> Result<(), Error> {
    std::fs::create_dir_all(&args.work_dir).map_err(|e| Error::io(&args.work_dir, e))?;
    let exe = self_exe()?;
    let b = Bench { exe: &exe, args };
    let mut result = Offline {
        seed: args.seed,
        ..Default::default()
    };
    for &n in &args.sizes {
        result.plan.extend(plan_size(&b, n)?);
    }
    result.convert = Some(conversion(&b)?);
    let text = serde_json::to_string_pretty(&result).map_err(|e| Error::Msg(e.to_string()))?;
    if let Some(parent) = args.results.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    std::fs::write(&args.results, text).map_err(|e| Error::io(&args.results, e))?;
    eprintln!("offline: results in {}", args.results.display());
    Ok(())
}

/// The corpus of `n` namespaces as YAML and as a JSON List, each planned.
fn plan_size(b: &Bench<'_>, n: usize) -> Result<[PlanSize; 2], Error> {
    let args = b.args;
    let file = args.work_dir.join(format!("corpus-{n}.yaml"));
    let json_file = args.work_dir.join(format!("corpus-{n}.json"));
    let opts = Options {
        namespaces: n,
        seed: args.seed,
        variant: Variant::Mesh,
    };
    let t = Instant::now();
    let objects = synth::corpus(&opts);
    let bytes = write_yaml(&file, &objects)?;
    eprintln!(
        "offline: {n} namespaces: {} ({:.1} MB, generated in {:.1} s)",
        file.display(),
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    // The same objects as `kubectl get … -o json` prints them: one List.
    let bytes = write_json_list(&json_file, objects)?;
    eprintln!(
        "offline: {n} namespaces: {} ({:.1} MB)",
        json_file.display(),
        bytes as f64 / 1e6
    );
    let yaml = plan_runs(
        b,
        n,
        &Corpus {
            format: "YAML",
            file: &file,
        },
    )?;
    let json = plan_runs(
        b,
        n,
        &Corpus {
            format: "JSON",
            file: &json_file,
        },
    )?;
    Ok([yaml, json])
}

/// The files both converters read: meshmig the mesh routes with their Services and
/// DestinationRules, ingress2gateway the same routes bound to Istio Gateways.
struct ConversionInputs {
    routes_file: PathBuf,
    gw_file: PathBuf,
    virtual_services: usize,
    meshmig_bytes: u64,
    i2gw_bytes: u64,
}

fn conversion_inputs(args: &Args) -> Result<ConversionInputs, Error> {
    let n = args.convert_size;
    let opts = Options {
        namespaces: n,
        seed: args.seed,
        variant: Variant::Mesh,
    };
    let routes_file = args.work_dir.join(format!("routes-mesh-{n}.yaml"));
    let keep = ["Namespace", "Service", "DestinationRule", "VirtualService"];
    let mesh: Vec<Value> = synth::corpus(&opts)
        .into_iter()
        .filter(|o| keep.iter().any(|k| o["kind"] == *k))
        .collect();
    let virtual_services = mesh
        .iter()
        .filter(|o| o["kind"] == "VirtualService")
        .count();
    let meshmig_bytes = write_yaml(&routes_file, &mesh)?;
    let gw_file = args.work_dir.join(format!("routes-gateway-{n}.yaml"));
    let i2gw_bytes = write_yaml(
        &gw_file,
        &synth::corpus(&Options {
            variant: Variant::Gateway,
            ..opts
        }),
    )?;
    Ok(ConversionInputs {
        routes_file,
        gw_file,
        virtual_services,
        meshmig_bytes,
        i2gw_bytes,
    })
}

fn conversion(b: &Bench<'_>) -> Result<Convert, Error> {
    let args = b.args;
    let inputs = conversion_inputs(args)?;
    let mut convert = Convert {
        namespaces: args.convert_size,
        meshmig_input_bytes: inputs.meshmig_bytes,
        i2gw_input_bytes: inputs.i2gw_bytes,
        ..Default::default()
    };
    let repeats = args.convert_repeats.to_string();
    // In-process, one after the other (one run).
    let out = output(
        Command::new(b.exe)
            .arg("convert-run")
            .arg(&inputs.routes_file)
            .args(["--repeat", &repeats]),
    )?;
    convert.meshmig = parse("convert-run", &out)?;
    eprintln!(
        "offline: conversion of {} VirtualServices: meshmig {:?}",
        inputs.virtual_services, convert.meshmig.repeats_s
    );
    if let Some(home) = &args.i2gw_home {
        ingress2gateway(b, home, &inputs, &mut convert)?;
    }
    Ok(convert)
}

/// ingress2gateway in-process, then both command lines end to end.
fn ingress2gateway(
    b: &Bench<'_>,
    home: &Path,
    inputs: &ConversionInputs,
    convert: &mut Convert,
) -> Result<(), Error> {
    let args = b.args;
    let repeats = args.convert_repeats.to_string();
    let bench = home.join("bin/i2gwbench");
    let cli = home.join("bin/ingress2gateway");
    let out = output(
        Command::new(&bench)
            .arg("-input-file")
            .arg(&inputs.gw_file)
            .args(["-repeat", &repeats])
            .args(["-virtual-services", &inputs.virtual_services.to_string()]),
    )?;
    let r: I2gwRun = parse("i2gwbench", &out)?;
    eprintln!("offline: ingress2gateway {:?}", r.repeats_s);
    convert.i2gw = Some(r);
    convert.i2gw_version = std::fs::read_to_string(home.join("SOURCES"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("ingress2gateway ").map(str::to_string))
        });
    // End to end, as a user runs them: interleaved process runs.
    for _ in 0..args.e2e_runs.max(1) {
        convert.meshmig_process_s.push(timed(
            Command::new(b.exe)
                .arg("convert-run")
                .arg(&inputs.routes_file)
                .args(["--repeat", "1", "--print"]),
        )?);
        convert.i2gw_process_s.push(timed(
            Command::new(&cli)
                .args(["print", "--providers=istio", "--input-file"])
                .arg(&inputs.gw_file),
        )?);
    }
    eprintln!(
        "offline: process wall time: meshmig {:?}, ingress2gateway {:?}",
        convert.meshmig_process_s, convert.i2gw_process_s
    );
    Ok(())
}
