//! `ripcord schema`: the JSON Schema of the runbook format.

use crate::error::CommandResult;
use crate::exit;
use crate::runbook::Runbook;

/// The schema as committed in schema/runbook.schema.json.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(Runbook);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema always serializes");
    text.push('\n');
    text
}

pub fn run() -> CommandResult {
    print!("{}", schema_json());
    Ok(exit::OK)
}
