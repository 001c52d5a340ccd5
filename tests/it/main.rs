//! The one integration-test binary: drives the real `ripcord` binary (and the library where a
//! test needs the plan itself).

mod cli;
mod exec;
mod fixtures;
mod planner;
mod plugins;
mod report;
mod secrets;
mod support;
