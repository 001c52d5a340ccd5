//! What a step's expressions can see during a run: `inputs`, `run`, `item`, and only the steps
//! its expressions refer to (building every step's view for every render would make a run
//! quadratic).

use std::collections::HashMap;

use serde_json::{Map, Value as Json};

use crate::expr::{self, Expr, Ref};
use crate::journal::record::StepStatus;
use crate::plan::Plan;

use super::state::{Status, StepState};

/// What expressions can see.
pub struct Scope<'a> {
    pub plan: &'a Plan,
    pub inputs: &'a Map<String, Json>,
    pub run: Json,
    pub states: &'a [StepState],
    /// Declared id -> its steps (one, or each for_each instance).
    pub instances: &'a HashMap<String, Vec<usize>>,
}

impl Scope<'_> {
    /// The context for expressions `exprs` of step `me`.
    pub fn context(&self, me: Option<usize>, exprs: &[&Expr]) -> minijinja::Value {
        let mut steps = Map::new();
        for e in exprs {
            for r in &e.refs {
                if let Ref::Step { id, .. } = r {
                    steps
                        .entry(expr::mangle(id))
                        .or_insert_with(|| self.step_view(id));
                }
            }
        }
        let item = me
            .and_then(|i| self.plan.steps[i].item.clone())
            .unwrap_or(Json::Null);
        minijinja::context! {
            inputs => mj(self.inputs),
            run => mj(&self.run),
            steps => mj(&steps),
            item => mj(&item),
        }
    }

    /// The step outputs `exprs` read that their step has not given (each instance, for a
    /// for_each step), as `steps.ID.outputs.KEY`: a failure to render names them instead of
    /// "undefined value" (or, in a dry-run, a null from nowhere).
    pub fn missing_outputs(&self, exprs: &[&Expr]) -> Vec<String> {
        let mut missing = Vec::new();
        for e in exprs {
            for r in &e.refs {
                let Ref::Step { id, path } = r else { continue };
                let (Some("outputs"), Some(key)) = (path.first().map(String::as_str), path.get(1))
                else {
                    continue;
                };
                let Some(members) = self.instances.get(id) else {
                    continue;
                };
                let absent = members
                    .iter()
                    .any(|&i| !self.states[i].outputs.contains_key(key));
                let shown = format!("steps.{id}.outputs.{key}");
                if absent && !missing.contains(&shown) {
                    missing.push(shown);
                }
            }
        }
        missing
    }

    /// The steps `exprs` read outputs of that failed (some instance of them).
    pub fn failed_sources(&self, exprs: &[&Expr]) -> Vec<String> {
        let mut failed = Vec::new();
        for e in exprs {
            for r in &e.refs {
                let Ref::Step { id, path } = r else { continue };
                if path.first().map(String::as_str) != Some("outputs") || failed.contains(id) {
                    continue;
                }
                let Some(members) = self.instances.get(id) else {
                    continue;
                };
                if members.iter().any(|&i| {
                    self.states[i].status == Status::Done(StepStatus::Failed)
                        || self.states[i].unjudged
                }) {
                    failed.push(id.clone());
                }
            }
        }
        failed
    }

    /// `{status, outputs}` of a declared step; for a for_each step, `outputs` is the list of
    /// its instances' outputs and `status` the worst of theirs.
    fn step_view(&self, id: &str) -> Json {
        let Some(members) = self.instances.get(id) else {
            return Json::Null;
        };
        let status_of = |i: usize| self.states[i].status.name();
        if let [only] = members[..]
            && self.plan.steps[only].item.is_none()
        {
            return serde_json::json!({
                "status": status_of(only),
                "outputs": Json::Object(self.states[only].outputs.clone()),
            });
        }
        let statuses: Vec<&Status> = members.iter().map(|&i| &self.states[i].status).collect();
        let worst = if statuses
            .iter()
            .any(|s| matches!(s, Status::Done(StepStatus::Failed)))
        {
            "failed"
        } else if statuses
            .iter()
            .all(|s| matches!(s, Status::Done(StepStatus::Skipped)))
        {
            "skipped"
        } else if statuses
            .iter()
            .all(|s| matches!(s, Status::Done(StepStatus::Succeeded | StepStatus::Skipped)))
        {
            "succeeded"
        } else {
            "pending"
        };
        let outputs: Vec<Json> = members
            .iter()
            .map(|&i| Json::Object(self.states[i].outputs.clone()))
            .collect();
        serde_json::json!({ "status": worst, "outputs": outputs })
    }
}

fn mj<T: serde::Serialize>(v: T) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(v))
}
