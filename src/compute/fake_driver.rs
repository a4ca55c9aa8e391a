//! An in-memory [`ComputeDriver`] for unit tests: VMs are entries in a map
//! that go running, paused, saved or away as the calls say; every call is
//! recorded, and a command can be made to fail.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use super::driver::{
    BootFiles, ComputeDriver, ConsoleStream, ControlFailure, DriverError, DriverFuture,
    DriverResult,
};
use crate::db::servers::{Server, ServerPort, ServerVolume};
use crate::vmm::control::{ReplyError, StatusReply, VmmState};

/// What a fake VM is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FakeVm {
    Running,
    Paused,
}

#[derive(Default)]
struct Inner {
    vms: HashMap<String, FakeVm>,
    saved: HashSet<String>,
    files: HashSet<String>,
    calls: Vec<String>,
    failing: HashSet<&'static str>,
    expected_exits: HashSet<String>,
    next_pid: i32,
}

/// The fake driver.
#[derive(Default)]
pub struct FakeDriver(Mutex<Inner>);

impl FakeDriver {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The calls so far, as `name id`.
    pub fn calls(&self) -> Vec<String> {
        self.inner().calls.clone()
    }

    /// The VM of server `id`, if one runs.
    pub fn vm(&self, id: &str) -> Option<FakeVm> {
        self.inner().vms.get(id).copied()
    }

    /// Makes every later `call` (e.g. "pause") fail as a refusing VMM would.
    pub fn fail(&self, call: &'static str) {
        self.inner().failing.insert(call);
    }

    /// Records a call; Err when it was made to fail.
    fn record(&self, call: &'static str, id: &str) -> DriverResult<()> {
        self.record_as(call, format!("{call} {id}"))
    }

    /// Records a call as `text`; Err when `call` was made to fail.
    fn record_as(&self, call: &'static str, text: String) -> DriverResult<()> {
        let mut inner = self.inner();
        inner.calls.push(text);
        if inner.failing.contains(call) {
            return Err(DriverError::Control(ControlFailure::Reply(
                ReplyError::Refused(format!("{call} refused")),
            )));
        }
        Ok(())
    }

    /// Changes a running VM's state; refused when none runs.
    fn set(&self, call: &'static str, id: &str, to: FakeVm) -> DriverResult<()> {
        self.record(call, id)?;
        match self.inner().vms.get_mut(id) {
            Some(vm) => {
                *vm = to;
                Ok(())
            }
            None => Err(DriverError::Control(ControlFailure::Connect(
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ))),
        }
    }
}

impl ComputeDriver for FakeDriver {
    fn prepare<'a>(
        &'a self,
        id: &'a str,
        _boot: BootFiles,
        _disk_gb: i64,
        _config_drive: Option<Vec<(String, Vec<u8>)>>,
    ) -> DriverFuture<'a, DriverResult<()>> {
        Box::pin(async move {
            self.record("prepare", id)?;
            self.inner().files.insert(id.to_string());
            Ok(())
        })
    }

    fn prepare_rescue<'a>(
        &'a self,
        id: &'a str,
        _boot: BootFiles,
    ) -> DriverFuture<'a, DriverResult<()>> {
        Box::pin(async move { self.record("prepare_rescue", id) })
    }

    fn drop_rescue<'a>(&'a self, id: &'a str) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            let _ = self.record("drop_rescue", id);
        })
    }

    fn grow_disk<'a>(&'a self, id: &'a str, _disk_gb: i64) -> DriverFuture<'a, DriverResult<()>> {
        Box::pin(async move { self.record("grow_disk", id) })
    }

    fn copy_disk<'a>(&'a self, id: &'a str, dest: PathBuf) -> DriverFuture<'a, DriverResult<()>> {
        Box::pin(async move {
            self.record("copy_disk", id)?;
            std::fs::write(&dest, b"disk").map_err(|source| DriverError::Io {
                what: dest.display().to_string(),
                source,
            })
        })
    }

    fn destroy_files<'a>(&'a self, id: &'a str) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            let _ = self.record("destroy_files", id);
            let mut inner = self.inner();
            inner.files.remove(id);
            inner.saved.remove(id);
        })
    }

    fn console_output<'a>(
        &'a self,
        id: &'a str,
        _lines: Option<usize>,
    ) -> DriverFuture<'a, String> {
        Box::pin(async move {
            let _ = self.record("console_output", id);
            "login: ".to_string()
        })
    }

    fn log_tail(&self, _id: &str) -> String {
        String::new()
    }

    fn has_saved_state(&self, id: &str) -> bool {
        self.inner().saved.contains(id)
    }

    fn drop_saved_state<'a>(&'a self, id: &'a str) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            self.inner().saved.remove(id);
        })
    }

    fn spawn<'a>(
        &'a self,
        server: &'a Server,
        restore: bool,
    ) -> DriverFuture<'a, DriverResult<i32>> {
        Box::pin(async move {
            let call = match (restore, server.rescue.is_some()) {
                (true, _) => "restore",
                (false, true) => "spawn_rescue",
                (false, false) => "spawn",
            };
            self.record(call, &server.id)?;
            let mut inner = self.inner();
            inner.next_pid += 1;
            inner.vms.insert(server.id.clone(), FakeVm::Running);
            Ok(1000 + inner.next_pid)
        })
    }

    fn stop<'a>(&'a self, id: &'a str, clean_timeout: Option<Duration>) -> DriverFuture<'a, ()> {
        Box::pin(async move {
            let call = if clean_timeout.is_some() {
                "stop_clean"
            } else {
                "stop"
            };
            let _ = self.record(call, id);
            let mut inner = self.inner();
            if inner.vms.remove(id).is_some() {
                inner.expected_exits.insert(id.to_string());
            }
        })
    }

    fn pause<'a>(&'a self, id: &'a str) -> DriverFuture<'a, DriverResult<()>> {
        Box::pin(async move { self.set("pause", id, FakeVm::Paused) })
    }

    fn resume<'a>(&'a self, id: &'a str) -> DriverFuture<'a, DriverResult<()>> {
        Box::pin(async move { self.set("resume", id, FakeVm::Running) })
    }

    fn reset<'a>(&'a self, id: &'a str) -> DriverFuture<'a, DriverResult<()>> {
        Box::pin(async move { self.set("reset", id, FakeVm::Running) })
    }

    fn save<'a>(&'a self, id: &'a str) -> DriverFuture<'a, DriverResult<()>> {
        Box::pin(async move {
            self.set("save", id, FakeVm::Paused)?;
            let mut inner = self.inner();
            inner.vms.remove(id);
            inner.saved.insert(id.to_string());
            inner.expected_exits.insert(id.to_string());
            Ok(())
        })
    }

    fn status<'a>(&'a self, id: &'a str) -> DriverFuture<'a, Option<StatusReply>> {
        Box::pin(async move {
            let vm = self.vm(id)?;
            Some(StatusReply {
                state: match vm {
                    FakeVm::Running => VmmState::Running,
                    FakeVm::Paused => VmmState::Paused,
                },
                pid: 1,
                uptime_s: Some(1.0),
                boots: 1,
                console_clients: Some(0),
                vm: None,
            })
        })
    }

    fn stats<'a>(&'a self, id: &'a str) -> DriverFuture<'a, DriverResult<serde_json::Value>> {
        Box::pin(async move {
            self.record("stats", id)?;
            Ok(serde_json::json!({"vcpu_seconds": [0.5]}))
        })
    }

    fn console_stream<'a>(&'a self, id: &'a str) -> DriverFuture<'a, DriverResult<ConsoleStream>> {
        Box::pin(async move {
            self.record("console", id)?;
            let (ours, theirs) = tokio::io::duplex(1024);
            drop(theirs);
            let (read, write) = tokio::io::split(ours);
            Ok((
                Box::new(tokio::io::BufReader::new(read)) as _,
                Box::new(write) as _,
            ))
        })
    }

    fn attach_nic<'a>(
        &'a self,
        id: &'a str,
        port: &'a ServerPort,
    ) -> DriverFuture<'a, DriverResult<()>> {
        Box::pin(async move {
            self.record_as("attach_nic", format!("attach_nic {id} {}", port.port_id))?;
            if self.vm(id).is_none() {
                return Err(DriverError::Control(ControlFailure::Connect(
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                )));
            }
            Ok(())
        })
    }

    fn detach_nic<'a>(
        &'a self,
        id: &'a str,
        port: &'a ServerPort,
        _index: usize,
    ) -> DriverFuture<'a, DriverResult<()>> {
        Box::pin(async move {
            self.record_as("detach_nic", format!("detach_nic {id} {}", port.port_id))?;
            if self.vm(id).is_none() {
                return Err(DriverError::Control(ControlFailure::Connect(
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                )));
            }
            Ok(())
        })
    }

    fn resize_disk<'a>(
        &'a self,
        id: &'a str,
        volume: &'a ServerVolume,
    ) -> DriverFuture<'a, DriverResult<u64>> {
        Box::pin(async move {
            self.record_as(
                "resize_disk",
                format!("resize_disk {id} {}", volume.volume_id),
            )?;
            if self.vm(id).is_none() {
                return Err(DriverError::Control(ControlFailure::Connect(
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                )));
            }
            Ok(std::fs::metadata(&volume.path).map_or(0, |m| m.len()))
        })
    }

    fn attach_disk<'a>(
        &'a self,
        id: &'a str,
        volume: &'a ServerVolume,
    ) -> DriverFuture<'a, DriverResult<()>> {
        Box::pin(async move {
            self.record_as(
                "attach_disk",
                format!("attach_disk {id} {}", volume.volume_id),
            )?;
            if self.vm(id).is_none() {
                return Err(DriverError::Control(ControlFailure::Connect(
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                )));
            }
            Ok(())
        })
    }

    fn detach_disk<'a>(
        &'a self,
        id: &'a str,
        volume: &'a ServerVolume,
    ) -> DriverFuture<'a, DriverResult<()>> {
        Box::pin(async move {
            self.record_as(
                "detach_disk",
                format!("detach_disk {id} {}", volume.volume_id),
            )?;
            if self.vm(id).is_none() {
                return Err(DriverError::Control(ControlFailure::Connect(
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                )));
            }
            Ok(())
        })
    }

    fn is_alive(&self, id: &str) -> bool {
        self.vm(id).is_some()
    }

    fn is_child(&self, id: &str) -> bool {
        self.vm(id).is_some()
    }

    fn known_pid(&self, id: &str) -> Option<i32> {
        self.vm(id).map(|_| 1)
    }

    fn take_expected_exit(&self, id: &str) -> bool {
        self.inner().expected_exits.remove(id)
    }
}

/// A compute state over a fresh state file (in a temporary directory that
/// goes with it) and the fake driver: what the unit tests of lifecycle,
/// volume attachments and volume events start from.
pub struct TestCloud {
    pub s: std::sync::Arc<super::ComputeState>,
    pub fake: std::sync::Arc<FakeDriver>,
    pub dir: PathBuf,
}

impl Drop for TestCloud {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TestCloud {
    /// An empty cloud; `label` names its directory apart from other tests'.
    pub fn new(label: &str) -> TestCloud {
        let dir = std::env::temp_dir().join(format!("yunhe-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let db = crate::db::Db::open(&dir.join("yunhe.db")).expect("db");
        let identity = crate::identity::IdentityState::new(
            db,
            "http://127.0.0.1:1".into(),
            std::sync::Arc::new(crate::policy::Policy::defaults().expect("policy")),
            Default::default(),
        )
        .expect("identity");
        let fake = std::sync::Arc::new(FakeDriver::default());
        let s = super::ComputeState::new(identity, Default::default(), fake.clone());
        TestCloud { s, fake, dir }
    }

    /// Stores `server` and, when `running`, starts its VM in the fake driver.
    pub async fn add_server(&self, server: &Server, running: bool) {
        let stored = server.clone();
        self.s
            .write(move |tx| Ok(crate::db::servers::insert_server(tx, &stored)?))
            .await
            .expect("insert");
        if running {
            self.fake.spawn(server, false).await.expect("spawn");
        }
    }
}

/// Server `srv` of project `p` and user `u`, ACTIVE and running: the
/// server the unit tests act on.
pub fn active_server() -> Server {
    Server {
        id: "srv".into(),
        name: "vm".into(),
        project_id: "p".into(),
        user_id: "u".into(),
        vm_state: super::states::VmState::Active,
        power_state: super::states::PowerState::Running,
        reservation_id: "r-1".into(),
        hostname: "vm".into(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn the_fake_follows_the_calls() {
        let fake = Arc::new(FakeDriver::default());
        let driver: Arc<dyn ComputeDriver> = fake.clone();
        let server = Server {
            id: "s1".into(),
            ..Default::default()
        };
        assert!(driver.spawn(&server, false).await.is_ok());
        assert_eq!(
            driver.status("s1").await.map(|s| s.state),
            Some(VmmState::Running)
        );
        assert!(driver.pause("s1").await.is_ok());
        assert_eq!(fake.vm("s1"), Some(FakeVm::Paused));
        assert!(driver.save("s1").await.is_ok());
        assert!(driver.has_saved_state("s1") && !driver.is_alive("s1"));
        assert!(driver.take_expected_exit("s1"));
        assert!(driver.resume("s1").await.is_err());
        fake.fail("restore");
        assert!(driver.spawn(&server, true).await.is_err());
        assert_eq!(
            fake.calls(),
            ["spawn s1", "pause s1", "save s1", "resume s1", "restore s1"]
        );
    }
}
