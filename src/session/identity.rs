//! Who did something: the OS account of the real uid, the account that ran `sudo` when there
//! was one, and the host. `$USER` and `$LOGNAME` are never read: anyone can set them.

use std::ffi::CStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The account of the real uid (`root` under sudo).
    pub account: String,
    pub uid: u32,
    /// `$SUDO_USER`, when the real uid is root and sudo set it: the person behind `root`. Root
    /// can set this variable to anything; it is recorded as what it is, a claim made as root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sudo_user: Option<String>,
    pub host: String,
    /// The database role that recorded it, when the state is a database (which vouches for
    /// the role; the account and host are what the client said).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_role: Option<String>,
}

impl Identity {
    pub fn current() -> Identity {
        // SAFETY: getuid cannot fail and touches no memory.
        let uid = unsafe { libc::getuid() };
        Identity::of_uid(uid, std::env::var("SUDO_USER").ok(), host_name())
    }

    /// The identity of `uid`: its account name, and the sudo user claimed, kept only for root
    /// (sudo runs as root; anyone else's `SUDO_USER` means nothing).
    pub fn of_uid(uid: u32, sudo_user: Option<String>, host: String) -> Identity {
        let account = account_name(uid).unwrap_or_else(|| format!("uid {uid}"));
        let sudo_user = sudo_user.filter(|u| uid == 0 && !u.is_empty() && u != "root");
        Identity {
            account,
            uid,
            sudo_user,
            host,
            db_role: None,
        }
    }

    /// The same client identity, whatever database role recorded either.
    pub fn same_client(&self, other: &Identity) -> bool {
        self.account == other.account
            && self.uid == other.uid
            && self.sudo_user == other.sudo_user
            && self.host == other.host
    }

    /// The person this identity stands for, as approvers lists name them: the sudo user when
    /// there is one, else the account.
    pub fn person(&self) -> &str {
        self.sudo_user.as_deref().unwrap_or(&self.account)
    }
}

impl std::fmt::Display for Identity {
    /// `alice@db-jump-1`, `alice (sudo, root)@db-jump-1`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.sudo_user {
            Some(person) => write!(f, "{person} (sudo, {})@{}", self.account, self.host)?,
            None => write!(f, "{}@{}", self.account, self.host)?,
        }
        match &self.db_role {
            Some(role) => write!(f, " (database role {role})"),
            None => Ok(()),
        }
    }
}

fn account_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: an all-zero passwd is a valid value for getpwuid_r to fill in.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf outlives the use of pwd's strings.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded, so pw_name points to a NUL-terminated string inside buf.
    let name = unsafe { CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for its length; gethostname NUL-terminates within it when it fits.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_comes_from_the_uid_not_the_environment() {
        // SAFETY: the test binary sets this before reading it, in this test only.
        unsafe { std::env::set_var("USER", "mallory-from-env") };
        let me = Identity::current();
        assert_ne!(me.account, "mallory-from-env");
        assert!(!me.host.is_empty());
    }
}
