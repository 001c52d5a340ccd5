//! Providers: what `uses: provider.action` resolves to. For now the catalogue of built-in
//! actions (their parameter schemas, output keys and default simulated durations), which the
//! compiler checks runbooks against. External plugins are resolved by name only.

pub mod catalog;

pub use catalog::{ActionSpec, Outputs, builtin};
