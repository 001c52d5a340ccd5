//! `ripcord graph FILE --format dot|mermaid`: the DAG, critical path highlighted.

use std::fmt::Write;

use crate::cli::{GraphArgs, GraphFormat};
use crate::compile::CompileOptions;
use crate::exit;
use crate::plan::Plan;
use crate::provider::Providers;
use crate::runbook::duration::format as dur;

use super::compile_one;

pub fn run(args: &GraphArgs) -> u8 {
    // A graph is structure: required inputs without a value do not stop it.
    let providers = Providers::new(&args.plugins.plugin_dirs);
    let options = CompileOptions {
        providers: &providers,
        inputs: &args.inputs.inputs,
        require_inputs: false,
    };
    let compiled = match compile_one(&args.file, &options) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let plan = &compiled.plan;
    print!(
        "{}",
        match args.format {
            GraphFormat::Dot => dot(plan),
            GraphFormat::Mermaid => mermaid(plan),
        }
    );
    exit::OK
}

fn critical_edges(plan: &Plan) -> (Vec<bool>, std::collections::HashSet<(usize, usize)>) {
    let path = plan.critical_path();
    let mut on = vec![false; plan.steps.len()];
    for &i in &path {
        on[i] = true;
    }
    (on, path.windows(2).map(|w| (w[0], w[1])).collect())
}

/// Dependents in file order, so the output reads like the runbook.
fn sorted_dependents(plan: &Plan, step: usize) -> Vec<usize> {
    let mut dependents: Vec<usize> = plan.dependents(step).collect();
    dependents.sort_unstable();
    dependents
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

pub fn dot(plan: &Plan) -> String {
    let (on, edges) = critical_edges(plan);
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", dot_escape(&plan.name));
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(
        out,
        "  node [shape=box, style=rounded, fontname=\"Helvetica\"];"
    );
    for (i, s) in plan.steps.iter().enumerate() {
        let style = if on[i] {
            ", color=\"#d00000\", penwidth=2"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{}\\n{} · {}\"{style}];",
            dot_escape(&s.id),
            dot_escape(&s.id),
            dot_escape(&s.action.to_string()),
            dur(plan.estimate(i)),
        );
    }
    for &i in &plan.order {
        for d in sorted_dependents(plan, i) {
            let style = if edges.contains(&(i, d)) {
                " [color=\"#d00000\", penwidth=2]"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\"{style};",
                dot_escape(&plan.steps[i].id),
                dot_escape(&plan.steps[d].id)
            );
        }
    }
    out.push_str("}\n");
    out
}

fn mermaid_escape(s: &str) -> String {
    s.replace('"', "#quot;")
}

pub fn mermaid(plan: &Plan) -> String {
    let (on, edges) = critical_edges(plan);
    let mut out = String::from("flowchart LR\n");
    for (i, s) in plan.steps.iter().enumerate() {
        let _ = writeln!(
            out,
            "  n{i}[\"{}<br/>{} · {}\"]",
            mermaid_escape(&s.id),
            mermaid_escape(&s.action.to_string()),
            dur(plan.estimate(i))
        );
    }
    let mut link = 0;
    let mut critical_links = Vec::new();
    for &i in &plan.order {
        for d in sorted_dependents(plan, i) {
            let _ = writeln!(out, "  n{i} --> n{d}");
            if edges.contains(&(i, d)) {
                critical_links.push(link.to_string());
            }
            link += 1;
        }
    }
    let nodes: Vec<String> = (0..plan.steps.len())
        .filter(|&i| on[i])
        .map(|i| format!("n{i}"))
        .collect();
    if !nodes.is_empty() {
        let _ = writeln!(out, "  classDef critical stroke:#d00000,stroke-width:3px;");
        let _ = writeln!(out, "  class {} critical;", nodes.join(","));
    }
    if !critical_links.is_empty() {
        let _ = writeln!(
            out,
            "  linkStyle {} stroke:#d00000,stroke-width:3px;",
            critical_links.join(",")
        );
    }
    out
}
