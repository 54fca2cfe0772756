//! Test doubles shared by the unit tests: an in-memory dataplane and a temporary folder.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::bail;

use crate::dataplane::Dataplane;
use crate::rules::dest::Dest;
use crate::rules::rulebook::RuleBook;
use crate::rules::spec::RuleSpec;
use crate::rules::status::{DestinationStatus, SideStatus};

/// Rules in a map; `fail_apply` makes every apply fail as a kernel error would, `fail_dest`
/// only the applies of one destination.
#[derive(Default)]
pub struct MemoryDataplane {
    pub rules: Mutex<BTreeMap<Dest, RuleSpec>>,
    pub fail_apply: AtomicBool,
    pub fail_dest: Mutex<Option<Dest>>,
    /// Shed limits in force, as `set_shed` left them.
    pub sheds: Mutex<BTreeMap<Dest, (u8, u32)>>,
    /// How many times every rule was listed (`rules`): what a change that should cost only
    /// what it changes must not do.
    pub listed: AtomicUsize,
}

impl MemoryDataplane {
    /// A dataplane that already holds `rules`, as pinned maps would.
    pub fn with(rules: &[RuleSpec]) -> Self {
        let dp = Self::default();
        for r in rules {
            dp.apply_rule(r).unwrap();
        }
        dp
    }
}

/// A rule book over `dp` with no config and no state file.
pub fn book(dp: Arc<MemoryDataplane>) -> Arc<RuleBook> {
    let config = crate::daemon::config::Config::default();
    let (book, _) = RuleBook::start(dp, None, config, None, Default::default()).unwrap();
    Arc::new(book)
}

impl Dataplane for MemoryDataplane {
    fn apply_rule(&self, rule: &RuleSpec) -> anyhow::Result<()> {
        let failing = self.fail_dest.lock().unwrap().as_ref() == Some(&rule.destination);
        if self.fail_apply.load(Ordering::SeqCst) || failing {
            bail!("rules map is full");
        }
        self.rules
            .lock()
            .unwrap()
            .insert(rule.destination.clone(), rule.clone());
        Ok(())
    }
    fn delete_rule(&self, dest: &Dest) -> anyhow::Result<bool> {
        Ok(self.rules.lock().unwrap().remove(dest).is_some())
    }
    fn status(&self) -> anyhow::Result<Vec<DestinationStatus>> {
        let rules = self.rules.lock().unwrap();
        Ok(rules
            .values()
            .map(|r| DestinationStatus {
                destination: r.destination.to_string(),
                inbound: SideStatus::default(),
                outbound: SideStatus {
                    active: 1,
                    ..Default::default()
                },
                rule: Some(r.clone()),
                source: None,
                seeding: None,
                overload: Default::default(),
                service: Default::default(),
                breakers: Vec::new(),
            })
            .collect())
    }
    fn rules(&self) -> Vec<RuleSpec> {
        self.listed.fetch_add(1, Ordering::SeqCst);
        self.rules.lock().unwrap().values().cloned().collect()
    }
    fn rule_of(&self, dest: &Dest) -> Option<RuleSpec> {
        self.rules.lock().unwrap().get(dest).cloned()
    }
    fn counters(&self, dest: &Dest) -> anyhow::Result<Option<DestinationStatus>> {
        Ok(self
            .status()?
            .into_iter()
            .find(|s| s.destination == dest.to_string()))
    }
    fn set_shed(&self, dest: &Dest, shed: Option<(u8, u32)>) -> anyhow::Result<()> {
        let mut sheds = self.sheds.lock().unwrap();
        match shed {
            Some(s) => sheds.insert(dest.clone(), s),
            None => sheds.remove(dest),
        };
        Ok(())
    }
}

/// A fresh folder under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("limiter-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One request to the daemon at `socket`, from a blocking thread as the CLI makes it.
pub async fn call(
    socket: &std::path::Path,
    req: crate::control::protocol::Request,
) -> anyhow::Result<serde_json::Value> {
    let socket = socket.to_owned();
    tokio::task::spawn_blocking(move || crate::control::client::request(&socket, &req))
        .await
        .expect("the request thread")
}
