//! Human-readable rendering of a plan (`meshmig plan --output text`): a report grouped by
//! step, in the spirit of a migration assistant's phases.

use std::fmt::Write;

use meshmig_api::{Enforcer, Step, WindowKind};

use crate::findings::Severity;
use crate::plan::{Action, Enforcement, NamespacePlan, Op, Plan, ServicePlan, StepPlan};

/// Terminal styling.
#[derive(Clone, Copy, Debug, Default)]
pub struct Style {
    /// Use ANSI colours.
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
    fn red(&self, s: &str) -> String {
        self.paint("31", s)
    }
    fn yellow(&self, s: &str) -> String {
        self.paint("33", s)
    }
    fn green(&self, s: &str) -> String {
        self.paint("32", s)
    }
    fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }
}

fn op_word(op: Op) -> &'static str {
    match op {
        Op::Verify => "verify",
        Op::Patch => "patch",
        Op::Create => "create",
        Op::Prepare => "prepare",
        Op::Apply => "apply",
        Op::Label => "label",
        Op::Unlabel => "unlabel",
        Op::UnlabelTemplate => "unlabel-template",
        Op::Restart => "restart",
        Op::Delete => "delete",
        Op::RemoveMeshGateway => "edit",
    }
}

fn action_line(a: &Action) -> String {
    let mut what = a.object.to_string();
    if let (Some(k), Some(v)) = (&a.key, &a.value) {
        what = format!("{what} {k}={v}");
    } else if let Some(k) = &a.key {
        what = format!("{what} {k}-");
    }
    let when = if a.after_rollout {
        " (after rollout)"
    } else {
        ""
    };
    format!("{:<16} {what}{when} — {}", op_word(a.op), a.detail)
}

/// Renders the plan as text. `verbose` also lists informational findings and the full
/// enforcement timeline.
pub fn render(plan: &Plan, style: Style, verbose: bool) -> String {
    let mut r = Report {
        out: String::new(),
        s: style,
        verbose,
    };
    r.header(plan);
    r.findings(plan);
    r.control_plane_commands(plan);
    for ns in &plan.namespaces {
        r.namespace(ns);
    }
    let _ = writeln!(
        r.out,
        "\n{} generated object(s); `meshmig plan --output yaml` prints them, `--output json` the whole plan.",
        plan.manifests.len()
    );
    r.out
}

/// The text being written, and how.
struct Report {
    out: String,
    s: Style,
    verbose: bool,
}

impl Report {
    fn header(&mut self, plan: &Plan) {
        let (out, s) = (&mut self.out, &self.s);
        let _ = writeln!(
            out,
            "{}",
            s.bold(&format!(
                "meshmig plan for migration \"{}\"",
                plan.migration
            ))
        );
        let cp = &plan.control_plane;
        let _ = writeln!(
            out,
            "Control plane: {:?}{} — Istio {}, trust domain {}, ambient: {}",
            cp.mode,
            cp.object
                .as_ref()
                .map(|o| format!(" ({o})"))
                .unwrap_or_default(),
            cp.version.as_deref().unwrap_or("unknown"),
            cp.trust_domain,
            if cp.ambient { "yes" } else { "not yet" }
        );
        let skipped: usize = plan.summary.skipped.values().sum();
        let _ = writeln!(
            out,
            "Inventory: {} objects{}",
            plan.summary.inventory_objects,
            if skipped > 0 {
                format!(" ({skipped} of other kinds skipped)")
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            out,
            "Namespaces, in order: {}",
            plan.namespace_order.join(", ")
        );
    }

    fn findings(&mut self, plan: &Plan) {
        let (out, s) = (&mut self.out, &self.s);
        let sm = &plan.summary;
        let verdict = if sm.blockers > 0 {
            s.red(&format!("{} blocker(s) stop this migration", sm.blockers))
        } else {
            s.green("no blockers")
        };
        let _ = writeln!(
            out,
            "\n{} {verdict}; {} accepted blocker(s), {} warning(s), {} info",
            s.bold("Findings:"),
            sm.accepted_blockers,
            sm.warnings,
            sm.infos
        );
        for f in &plan.findings {
            if f.severity == Severity::Info && !self.verbose {
                continue;
            }
            let tag = match (f.severity, f.accepted) {
                (Severity::Blocker, false) => s.red("✗ blocker "),
                (Severity::Blocker, true) => s.yellow("✓ accepted"),
                (Severity::Warning, _) => s.yellow("! warning "),
                (Severity::Info, _) => s.dim("i info    "),
            };
            let _ = writeln!(out, "  {tag} {:<32} {}", f.id, f.object);
            let _ = writeln!(out, "             {}", s.dim(&f.message));
        }
        if !self.verbose && sm.infos > 0 {
            let _ = writeln!(
                out,
                "  {}",
                s.dim(&format!(
                    "({} informational finding(s) hidden; --verbose shows them)",
                    sm.infos
                ))
            );
        }
    }

    fn control_plane_commands(&mut self, plan: &Plan) {
        if plan.control_plane_commands.is_empty() {
            return;
        }
        let _ = writeln!(
            self.out,
            "\n{}",
            self.s
                .bold("Control plane commands to run (External mode):")
        );
        for c in &plan.control_plane_commands {
            let _ = writeln!(self.out, "  {c}");
        }
    }

    fn namespace(&mut self, ns: &NamespacePlan) {
        let _ = writeln!(
            self.out,
            "\n{}",
            self.s.bold(&format!("Namespace {}", ns.name))
        );
        if !ns.exists {
            let _ = writeln!(self.out, "  {}", self.s.red("does not exist"));
            return;
        }
        self.waypoint_and_workloads(ns);
        self.services(&ns.services);
        for step in &ns.steps {
            self.step(step);
        }
        self.enforcement(&ns.enforcement);
    }

    fn waypoint_and_workloads(&mut self, ns: &NamespacePlan) {
        let out = &mut self.out;
        let wp = &ns.waypoint;
        if wp.needed {
            let _ = writeln!(
                out,
                "  Waypoint: {} (for {}{}), principal {}",
                wp.name,
                wp.for_,
                if wp.exists { ", exists" } else { "" },
                wp.principal
            );
        } else {
            let _ = writeln!(out, "  Waypoint: not needed");
        }
        let sidecars = ns.workloads.iter().filter(|w| w.sidecar).count();
        let _ = writeln!(
            out,
            "  Workloads: {} ({} with sidecars)",
            ns.workloads.len(),
            sidecars
        );
    }

    fn services(&mut self, services: &[ServicePlan]) {
        let (out, s) = (&mut self.out, &self.s);
        let _ = writeln!(out, "  Services:");
        for svc in services {
            let state = if svc.needs_waypoint {
                s.yellow("needs waypoint")
            } else if svc.served_by_waypoint {
                "served by waypoint".to_string()
            } else {
                "L4 only (ztunnel)".to_string()
            };
            let _ = writeln!(
                out,
                "    {:<20} {state}{}",
                svc.name,
                if svc.bypass_protection {
                    ", bypass protection"
                } else {
                    ""
                }
            );
            for r in &svc.reasons {
                let _ = writeln!(
                    out,
                    "      {} {}",
                    s.dim(&format!("{:<30}", r.id)),
                    r.object
                );
            }
        }
    }

    fn step(&mut self, step: &StepPlan) {
        let (out, s) = (&mut self.out, &self.s);
        let _ = writeln!(
            out,
            "  {}",
            s.bold(&format!("Step {} · {}", step.number, step.name))
        );
        let actions: Vec<&Action> = step.actions.iter().filter(|a| a.op != Op::Verify).collect();
        if actions.is_empty() {
            let _ = writeln!(out, "    {}", s.dim("no changes"));
        }
        for a in actions {
            let _ = writeln!(out, "    {}", action_line(a));
        }
        let _ = writeln!(
            out,
            "    {}",
            s.dim(&format!(
                "checkpoint: {}",
                step.checks
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        );
    }

    fn enforcement(&mut self, enforcement: &[Enforcement]) {
        let with_windows: Vec<_> = enforcement
            .iter()
            .filter(|e| self.verbose || !e.windows.is_empty())
            .collect();
        if with_windows.is_empty() {
            return;
        }
        let (out, s) = (&mut self.out, &self.s);
        let _ = writeln!(out, "  {}", s.bold("Enforcement timeline"));
        for e in with_windows {
            let _ = writeln!(
                out,
                "    {} ← {}: {}",
                e.service,
                e.policy,
                enforcement_path(e.moves_to_waypoint)
            );
            for w in &e.windows {
                let kind = if w.kind == WindowKind::FailOpen {
                    s.red(w.kind.as_str())
                } else {
                    s.yellow(w.kind.as_str())
                };
                let _ = writeln!(
                    out,
                    "      {kind} steps {}-{}: {}",
                    w.from_step, w.to_step, w.reason
                );
            }
        }
    }
}

/// Who enforces a policy over the steps: the sidecar until enrollment, then beside the
/// waypoint once it is active, then the waypoint (or ztunnel) alone once sidecars are gone.
fn enforcement_path(moves_to_waypoint: bool) -> String {
    let sidecar_only_until = if moves_to_waypoint {
        Step::AmbientEnrollment
    } else {
        Step::PolicySimplification
    };
    let alone = if moves_to_waypoint {
        Enforcer::Waypoint
    } else {
        Enforcer::Ztunnel
    };
    let mut path = format!(
        "{} ({}-{sidecar_only_until})",
        Enforcer::Sidecar,
        Step::FIRST
    );
    if moves_to_waypoint {
        path.push_str(&format!(
            " → {}+{} ({}-{})",
            Enforcer::Sidecar,
            Enforcer::Waypoint,
            Step::WaypointActivation,
            Step::PolicySimplification
        ));
    }
    path.push_str(&format!(" → {alone} ({})", Step::SidecarRemoval));
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_enforcement_path_names_the_steps() {
        assert_eq!(
            enforcement_path(true),
            "sidecar (1-6) → sidecar+waypoint (7-8) → waypoint (9)"
        );
        assert_eq!(enforcement_path(false), "sidecar (1-8) → ztunnel (9)");
    }
}
