//! The simulated provider of a dry-run (the executor has checked the rendered params against the
//! action's schema, as for a real run): takes the step's estimated duration in virtual time (a
//! paused tokio clock, so no real I/O happens here), fails where `--fail` or `sim.fail` says, and returns `sim.outputs` over typed
//! placeholders of the action's declared outputs.

use serde_json::Value as Json;

use super::catalog::{self, ActionSpec};
use super::{Failure, Outcome, OutputMap};
use crate::plan::PlannedStep;

/// What chance decides for one simulated attempt, drawn from the run's seed: where in its
/// jitter its duration falls (-1 to 1) and whether `--fail-rate` fails it (0 to 1, below the
/// rate fails).
#[derive(Debug, Clone, Copy, Default)]
pub struct Draw {
    pub spread: f64,
    pub failure: f64,
}

impl Draw {
    /// The draw for `attempt` of step `id` in a run seeded with `seed`: the same seed, the same
    /// draws, whatever the order steps run in.
    pub fn of(seed: u64, id: &str, attempt: u32) -> Draw {
        // FNV-1a of the id, mixed with the seed and the attempt by SplitMix64.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in id.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let mut state = seed ^ h ^ u64::from(attempt).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64
        };
        Draw {
            spread: next() * 2.0 - 1.0,
            failure: next(),
        }
    }
}

/// A simulated attempt: its duration (with its jitter), then its failure where `--fail` or
/// `sim.fail` says, or where `--fail-rate` draws one.
pub async fn simulate(
    step: &PlannedStep,
    spec: Option<&ActionSpec>,
    fail: bool,
    fail_rate: f64,
    draw: Draw,
) -> Outcome {
    let factor = (1.0 + step.sim.jitter * draw.spread).max(0.0);
    tokio::time::sleep(step.sim.duration.mul_f64(factor)).await;
    if fail {
        return Err(Failure::new("simulated failure (--fail or sim.fail)"));
    }
    if draw.failure < fail_rate {
        return Err(Failure::new(format!(
            "simulated failure (--fail-rate {fail_rate}, seeded)"
        )));
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
