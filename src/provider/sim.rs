//! The simulated provider of a dry-run: checks the rendered params against the action's schema,
//! takes the step's estimated duration in virtual time (a paused tokio clock, so no real I/O
//! happens here), fails where `--fail` or `sim.fail` says, and returns `sim.outputs` over typed
//! placeholders of the action's declared outputs.

use serde_json::Value as Json;

use super::catalog::{self, ActionSpec};
use super::{Failure, Outcome, OutputMap};
use crate::compile::params;
use crate::plan::PlannedStep;

pub async fn simulate(
    step: &PlannedStep,
    spec: Option<&ActionSpec>,
    params: &Json,
    fail: bool,
) -> Outcome {
    if let Some(spec) = spec {
        let problems = params::check_rendered(&spec.params, params);
        if !problems.is_empty() {
            return Err(Failure::permanent(format!(
                "{}: {}",
                spec.name(),
                problems.join("; ")
            )));
        }
    }
    tokio::time::sleep(step.sim.duration).await;
    if fail {
        return Err(Failure::new("simulated failure (--fail or sim.fail)"));
    }
    Ok(outputs(step, spec))
}

/// `sim.outputs` over placeholders of the declared outputs.
pub fn outputs(step: &PlannedStep, spec: Option<&ActionSpec>) -> OutputMap {
    let mut out = OutputMap::new();
    if let Some(spec) = spec {
        for key in spec.outputs.declared() {
            out.insert((*key).to_string(), catalog::placeholder(key));
        }
    }
    if let Some(Json::Object(given)) = &step.sim.outputs {
        out.extend(given.clone());
    }
    out
}
