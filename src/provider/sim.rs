//! The simulated provider of a dry-run (the executor has checked the rendered params against the
//! action's schema, as for a real run): takes the step's estimated duration in virtual time (a
//! paused tokio clock, so no real I/O happens here), fails where `--fail` or `sim.fail` says, and returns `sim.outputs` over typed
//! placeholders of the action's declared outputs.

use serde_json::Value as Json;

use super::catalog::{self, ActionSpec};
use super::{Failure, Outcome, OutputMap};
use crate::plan::PlannedStep;

pub async fn simulate(step: &PlannedStep, spec: Option<&ActionSpec>, fail: bool) -> Outcome {
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
