//! Processes as `/proc` shows them: whether a step's process group still has a member (the
//! supervisor), whether a process of a run is still alive (resume), and what is running (tests).
//! Zombies are left out: in a container whose PID 1 does not reap, a killed process lingers in
//! state Z, and it runs nothing.

use std::path::PathBuf;

/// One live process.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub pgid: i32,
    /// The session id: a process that called `setsid` leads its own (`sid == pid`).
    pub sid: i32,
    /// The command line, arguments joined by spaces.
    pub cmdline: String,
    dir: PathBuf,
}

impl Proc {
    /// The value of `key` in the process's environment (readable for processes of this user).
    pub fn env(&self, key: &str) -> Option<String> {
        let environ = std::fs::read(self.dir.join("environ")).ok()?;
        let prefix = format!("{key}=");
        environ
            .split(|&b| b == 0)
            .find_map(|v| v.strip_prefix(prefix.as_bytes()))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// The live processes of a run's steps: every step's child carries `RIPCORD_RUN_ID` (and
/// `RIPCORD_STEP`) in its environment, and its children inherit them, also those that left its
/// process group (`setsid`). Only processes this user may read are seen, which is every process
/// ripcord started as it; one that cleared its environment (`env -i`) is not. A process a
/// remote step started on its host carries the run's id but no `RIPCORD_SESSION` (ssh.run does
/// not send it): it is not ripcord's to wait for, even when that host is this machine (a
/// server that `pg_ctl start` left running over SSH).
pub fn of_run(run_id: &str) -> Vec<Proc> {
    live()
        .into_iter()
        .filter(|p| {
            p.env("RIPCORD_RUN_ID").as_deref() == Some(run_id) && p.env("RIPCORD_SESSION").is_some()
        })
        .collect()
}

/// Every live process but this one. A process that ends while it is read is left out.
pub fn live() -> Vec<Proc> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            if pid == me {
                return None;
            }
            let dir = entry.path();
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            // "pid (comm) S ppid pgrp ...": the fields after the name's closing parenthesis.
            let (_, rest) = stat.rsplit_once(") ")?;
            let mut fields = rest.split(' ');
            let state = fields.next()?;
            let ppid = fields.next()?.parse().ok()?;
            let pgid = fields.next()?.parse().ok()?;
            let sid = fields.next()?.parse().ok()?;
            if matches!(state, "Z" | "X") {
                return None;
            }
            let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .trim()
                .to_string();
            Some(Proc {
                pid,
                ppid,
                pgid,
                sid,
                cmdline,
                dir,
            })
        })
        .collect()
}
