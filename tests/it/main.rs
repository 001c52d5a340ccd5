//! The one integration-test binary: drives the real `ripcord` binary (and the library where a
//! test needs the plan itself).

mod cli;
mod cluster;
mod crash;
mod docs;
mod dr;
mod evidence;
mod exec;
mod failover;
mod fixtures;
mod modes;
mod modules;
mod planner;
mod plugins;
mod real_plugins;
mod remote;
mod report;
mod safety;
mod secrets;
mod shared;
mod sshd;
mod support;
