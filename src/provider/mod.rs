//! Providers: what `uses: provider.action` runs. One object-safe trait, [`Providers`] that
//! resolves names (built in, or an external plugin), the built-in providers with real effects
//! (shell, ssh, http, tcp, sleep), external [`plugin`]s, and the simulator
//! that stands in for all of them in a dry-run. `approval.ask` and `assert.that` are decided by
//! the executor itself (they need the operator and the run's values), not by a provider.

pub mod catalog;
pub mod http;
pub mod params;
pub mod plugin;
pub mod process;
pub mod providers;
pub mod shell;
pub mod sim;
pub mod sleep;
pub mod ssh;
pub mod tcp;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::{Map, Value as Json};
use tokio_util::sync::CancellationToken;

pub use catalog::{ActionSpec, Outputs, builtin};
pub use providers::{Lookup, Providers};

use crate::plan::ActionRef;

pub type OutputMap = Map<String, Json>;

/// One attempt of one step.
#[derive(Debug, Clone)]
pub struct Request {
    pub action: ActionRef,
    pub params: Json,
    pub step: String,
    pub attempt: u32,
    pub run_id: String,
    /// The attempt's timeout: the provider is cancelled when it passes.
    pub timeout: Duration,
    /// Cancelled on timeout or interrupt: stop, clean up (kill children), return.
    pub cancel: CancellationToken,
    /// A read-only probe (`run --check`), for actions that declare one.
    pub check: bool,
    /// The session's process groups: a child's group is told to the supervisor.
    pub groups: crate::session::supervisor::Groups,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub message: String,
    /// Whether another attempt may succeed (a refused connection) or not (a bad parameter).
    pub retryable: bool,
    /// Outputs gathered before failing (a failed command's stderr).
    pub outputs: OutputMap,
    /// Known to have done nothing (ssh.run could not connect, so its command never began): an
    /// attempt that cannot have taken effect, which a rollback has nothing to undo for.
    pub nothing_ran: bool,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            retryable: true,
            outputs: OutputMap::new(),
            nothing_ran: false,
        }
    }

    /// Known to have done nothing (see [`Failure::nothing_ran`]).
    pub fn nothing_ran(mut self) -> Failure {
        self.nothing_ran = true;
        self
    }

    /// With what a stopped process had written (a timeout's evidence).
    pub fn with_output(mut self, stdout: String, stderr: String) -> Failure {
        if !stdout.is_empty() {
            self.outputs.insert("stdout".into(), Json::String(stdout));
        }
        if !stderr.is_empty() {
            self.outputs.insert("stderr".into(), Json::String(stderr));
        }
        self
    }

    pub fn permanent(message: impl Into<String>) -> Failure {
        Failure {
            retryable: false,
            ..Failure::new(message)
        }
    }
}

pub type Outcome = Result<OutputMap, Failure>;
pub type BoxFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

pub trait Provider: Send + Sync {
    fn invoke(&self, request: Request) -> BoxFuture;
}

/// The param as a string, for params a schema already declared as text.
pub fn param_str<'a>(params: &'a Json, key: &str) -> Option<&'a str> {
    params.get(key).and_then(Json::as_str)
}

/// A scalar as the text a command line or environment gets (`5` -> "5", `true` -> "true").
pub fn scalar_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
