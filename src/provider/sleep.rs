//! `sleep.for`: waits for `duration` (cancellable).

use super::{BoxFuture, Failure, OutputMap, Provider, Request, param_str};
use crate::runbook::duration;

pub struct Sleep;

impl Provider for Sleep {
    fn invoke(&self, request: Request) -> BoxFuture {
        Box::pin(async move {
            let text = param_str(&request.params, "duration").unwrap_or_default();
            let d = duration::parse(text).map_err(Failure::permanent)?;
            tokio::select! {
                () = tokio::time::sleep(d) => Ok(OutputMap::new()),
                () = request.cancel.cancelled() => Err(Failure::new("cancelled")),
            }
        })
    }
}
