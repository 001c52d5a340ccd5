//! Resolving `uses: provider.action`: the built-in providers, and external plugins found and
//! described once per run (the same descriptions serve validation, dry-runs and real runs).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::catalog::{self, ActionSpec};
use super::plugin::{self, Plugin};
use super::{Provider, http, shell, sleep, ssh, tcp};

/// What `provider.action` resolves to.
pub enum Lookup {
    Found(Arc<ActionSpec>),
    /// The provider exists but has no such action; its actions.
    NoAction(Vec<String>),
    /// An external provider whose plugin was not found or could not be described.
    NoPlugin(String),
}

pub struct Providers {
    plugin_dirs: Vec<PathBuf>,
    plugins: Mutex<HashMap<String, Result<Arc<Plugin>, String>>>,
    shell: shell::Shell,
    ssh: ssh::Ssh,
    http: http::Http,
}

impl Providers {
    pub fn new(plugin_dirs: &[PathBuf]) -> Providers {
        Providers {
            plugin_dirs: plugin_dirs.to_vec(),
            plugins: Mutex::new(HashMap::new()),
            shell: shell::Shell::default(),
            ssh: ssh::Ssh::default(),
            http: http::Http::default(),
        }
    }

    /// `--plugin-dir DIR` for each directory given, for a command printed to be run again.
    pub fn again(&self) -> String {
        self.plugin_dirs
            .iter()
            .map(|d| {
                format!(
                    " --plugin-dir {}",
                    crate::cli::shell_word(&d.to_string_lossy())
                )
            })
            .collect()
    }

    /// The plugin for `provider`, found and described on first use.
    pub fn plugin(&self, provider: &str) -> Result<Arc<Plugin>, String> {
        let mut plugins = self.plugins.lock().unwrap_or_else(|e| e.into_inner());
        plugins
            .entry(provider.to_string())
            .or_insert_with(|| {
                let path = plugin::find(provider, &self.plugin_dirs).ok_or_else(|| {
                    format!(
                        "no plugin `{}` found (searched --plugin-dir, $RIPCORD_PLUGIN_PATH, the directory of ripcord, $PATH)",
                        plugin::executable_name(provider)
                    )
                })?;
                plugin::describe(provider, &path).map(Arc::new)
            })
            .clone()
    }

    pub fn lookup(&self, provider: &str, action: &str) -> Lookup {
        if catalog::is_builtin_provider(provider) {
            return match catalog::builtin(provider, action) {
                Some(spec) => Lookup::Found(spec),
                None => Lookup::NoAction(
                    catalog::builtins()
                        .iter()
                        .filter(|a| a.provider == provider)
                        .map(|a| a.action.clone())
                        .collect(),
                ),
            };
        }
        match self.plugin(provider) {
            Ok(p) => match p.actions.iter().find(|a| a.action == action) {
                Some(spec) => Lookup::Found(spec.clone()),
                None => Lookup::NoAction(p.actions.iter().map(|a| a.action.clone()).collect()),
            },
            Err(why) => Lookup::NoPlugin(why),
        }
    }

    /// The action's spec, when it is known.
    pub fn spec(&self, provider: &str, action: &str) -> Option<Arc<ActionSpec>> {
        match self.lookup(provider, action) {
            Lookup::Found(spec) => Some(spec),
            _ => None,
        }
    }

    /// A built-in provider with real effects.
    pub fn builtin(&self, provider: &str) -> Option<&dyn Provider> {
        match provider {
            "shell" => Some(&self.shell),
            "ssh" => Some(&self.ssh),
            "http" => Some(&self.http),
            "tcp" => Some(&tcp::Tcp),
            "sleep" => Some(&sleep::Sleep),
            _ => None,
        }
    }

    /// Ends what the session's providers hold open (ssh connections). Also done when they are
    /// dropped; called where a session ends, so nothing waits for the last reference.
    pub fn close(&self) {
        self.ssh.close();
    }

    /// Every plugin looked up so far, found or not.
    pub fn plugins(&self) -> Vec<(String, Result<Arc<Plugin>, String>)> {
        let plugins = self.plugins.lock().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<_> = plugins
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }
}
