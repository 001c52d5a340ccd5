//! `ripcord graph FILE --format dot|mermaid`: the DAG, critical path highlighted.

use std::fmt::Write;

use crate::cli::{GraphArgs, GraphFormat};
use crate::compile::CompileOptions;
use crate::error::CommandResult;
use crate::exit;
use crate::plan::Plan;
use crate::provider::Providers;
use crate::runbook::duration::format as dur;

use super::compile_one;

pub fn run(args: &GraphArgs) -> CommandResult {
    // A graph is structure: required inputs without a value do not stop it.
    let providers = Providers::new(&args.plugins.plugin_dirs);
    let input_files = args.inputs.files()?;
    let options = CompileOptions {
        providers: &providers,
        inputs: &args.inputs.inputs,
        input_files: &input_files,
        require_inputs: false,
        run_commands: false,
        mode: args.mode.as_deref(),
    };
    let compiled = compile_one(&args.file, &options)?;
    let plan = &compiled.plan;
    print!(
        "{}",
        match args.format {
            GraphFormat::Dot => dot(plan),
            GraphFormat::Mermaid => mermaid(plan),
        }
    );
    Ok(exit::OK)
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

type NodeWriter<'a> = dyn FnMut(&mut String, usize, &str) + 'a;
type GroupWriter<'a> = dyn FnMut(&mut String, usize, &str, bool) + 'a;

/// Writes the steps directly in `group` (None: the runbook's own) in file order, each module
/// included there as a group (DOT cluster, Mermaid subgraph) around its steps, nested.
fn nested(
    plan: &Plan,
    group: Option<usize>,
    depth: usize,
    node: &mut NodeWriter,
    wrap: &mut GroupWriter,
    out: &mut String,
) {
    let pad = "  ".repeat(depth);
    let mut opened = std::collections::HashSet::new();
    for (i, s) in plan.steps.iter().enumerate() {
        if s.group == group {
            node(out, i, &pad);
            continue;
        }
        // The outermost group below `group` that holds the step, opened at its first step.
        let mut child = s.group;
        while let Some(c) = child
            && plan.groups[c].parent != group
        {
            child = plan.groups[c].parent;
        }
        if let Some(c) = child
            && plan.in_group(i, c)
            && opened.insert(c)
        {
            wrap(out, c, &pad, true);
            nested(plan, Some(c), depth + 1, node, wrap, out);
            wrap(out, c, &pad, false);
        }
    }
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
    nested(
        plan,
        None,
        1,
        &mut |out, i, pad| {
            let s = &plan.steps[i];
            let style = if on[i] {
                ", color=\"#d00000\", penwidth=2"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "{pad}\"{}\" [label=\"{}\\n{} · {}\"{style}];",
                dot_escape(&s.id),
                dot_escape(&s.id),
                dot_escape(&s.action.to_string()),
                dur(plan.estimate(i)),
            );
        },
        &mut |out, g, pad, open| {
            if open {
                let group = &plan.groups[g];
                let _ = writeln!(out, "{pad}subgraph \"cluster_{g}\" {{");
                let _ = writeln!(
                    out,
                    "{pad}  label=\"{} ({})\"; style=\"rounded,dashed\"; fontname=\"Helvetica\";",
                    dot_escape(&group.id),
                    dot_escape(&group.file)
                );
            } else {
                let _ = writeln!(out, "{pad}}}");
            }
        },
        &mut out,
    );
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
    nested(
        plan,
        None,
        1,
        &mut |out, i, pad| {
            let s = &plan.steps[i];
            let _ = writeln!(
                out,
                "{pad}n{i}[\"{}<br/>{} · {}\"]",
                mermaid_escape(&s.id),
                mermaid_escape(&s.action.to_string()),
                dur(plan.estimate(i))
            );
        },
        &mut |out, g, pad, open| {
            if open {
                let group = &plan.groups[g];
                let _ = writeln!(
                    out,
                    "{pad}subgraph g{g}[\"{} · {}\"]",
                    mermaid_escape(&group.id),
                    mermaid_escape(&group.file)
                );
            } else {
                let _ = writeln!(out, "{pad}end");
            }
        },
        &mut out,
    );
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
