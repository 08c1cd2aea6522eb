//! Published ports: QEMU `hostfwd` rules that forward a host loopback port to a guest port
//! for as long as the service that asked for them runs.
//!
//! Only the VM's supervisor runs this: it alone talks to QEMU's monitor ([`crate::qmp`]) and
//! edits `published.json`, one operation at a time. The product asks for a publish or an
//! unpublish with a supervisor request; the supervisor also drops the rules of services that
//! ended (checked once a second while any rule is recorded).

use crate::{Error, Result, VmDir};
use pyro_protocol::PortForward;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// One recorded `hostfwd` rule and the service it publishes for (`published.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PublishedRule {
    pub(crate) service: String,
    pub(crate) host: String,
    pub(crate) host_port: u16,
    /// Absent in records of older pyro versions (0): such a rule cannot be re-applied.
    #[serde(default)]
    pub(crate) guest_port: u16,
}

/// The port registry of one VM, owned by its supervisor.
pub(crate) struct Ports {
    vm: VmDir,
    /// The VM's network policy allows published ports.
    allowed: bool,
    /// One monitor session and registry edit at a time (QEMU serves one QMP client).
    busy: tokio::sync::Mutex<()>,
}

impl Ports {
    pub(crate) fn new(vm: VmDir, allowed: bool) -> Self {
        Ports { vm, allowed, busy: tokio::sync::Mutex::new(()) }
    }

    /// Add every forward for `service`, or none: a refused one removes those already added.
    pub(crate) async fn publish(&self, service: &str, ports: &[PortForward]) -> Result<()> {
        if !self.allowed {
            return Err(Error::InvalidInput(
                "this VM's network policy does not allow published ports (egress+published-ports does)".into(),
            ));
        }
        for p in ports {
            check_forward(p)?;
        }
        let _busy = self.busy.lock().await;
        let mut added: Vec<PortForward> = Vec::new();
        for p in ports {
            if let Err(e) = self.add(p).await {
                self.remove(&added).await;
                return Err(e);
            }
            added.push(p.clone());
        }
        self.edit(|rules| {
            rules.extend(ports.iter().map(|p| PublishedRule {
                service: service.to_string(),
                host: p.host.clone(),
                host_port: p.host_port,
                guest_port: p.guest_port,
            }))
        })
    }

    /// Remove these forwards (matched by host address and port) and their records.
    pub(crate) async fn unpublish(&self, ports: &[PortForward]) -> Result<()> {
        let _busy = self.busy.lock().await;
        let known: Vec<PortForward> = ports.iter().filter(|p| check_forward(p).is_ok()).cloned().collect();
        self.remove(&known).await;
        self.edit(|rules| rules.retain(|r| !known.iter().any(|p| p.host == r.host && p.host_port == r.host_port)))
    }

    /// Hold the monitor: no publish, unpublish or cleanup runs a QMP session meanwhile (a
    /// pause runs its own).
    pub(crate) async fn lock_monitor(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.busy.lock().await
    }

    /// The recorded rules, for a saved memory state.
    pub(crate) fn recorded_ports(&self) -> Vec<crate::PublishedPort> {
        self.recorded()
            .into_iter()
            .filter(|r| r.guest_port != 0)
            .map(|r| crate::PublishedPort {
                service: r.service,
                host: r.host,
                host_port: r.host_port,
                guest_port: r.guest_port,
            })
            .collect()
    }

    /// Publish the ports of a saved state again in a restored VM. Each rule is removed first,
    /// so this holds whether or not QEMU kept it; a rule that cannot be added (its host port
    /// taken meanwhile) is reported and the others still go in.
    pub(crate) async fn republish(&self, ports: &[crate::PublishedPort]) -> Result<()> {
        // For the log: does QEMU's user network still listen on them after the load?
        if let Ok(table) = crate::qmp::human_command(&self.vm, "info usernet").await {
            // Rows look like `TCP[HOST_FORWARD]  13  127.0.0.1  8080  10.0.2.15  8080  0  0`.
            let listening = |p: &crate::PublishedPort| {
                let port = p.host_port.to_string();
                table.lines().filter(|l| l.contains("HOST_FORWARD")).any(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    cols.windows(2).any(|w| w[0] == p.host && w[1] == port)
                })
            };
            let kept = ports.iter().filter(|p| listening(p)).count();
            eprintln!(
                "supervisor: {kept} of {} published port(s) survived the restore; publishing all again",
                ports.len()
            );
        }
        let mut failed = Vec::new();
        for p in ports {
            let forward = PortForward { host: p.host.clone(), host_port: p.host_port, guest_port: p.guest_port };
            {
                let _busy = self.busy.lock().await;
                let _ = crate::qmp::human_command(&self.vm, &remove_command(&p.host, p.host_port)).await;
                self.edit(|rules| rules.retain(|r| !(r.host == p.host && r.host_port == p.host_port)))?;
            }
            if let Err(e) = self.publish(&p.service, &[forward]).await {
                failed.push(e.to_string());
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidInput(failed.join("; ")))
        }
    }

    /// The services that have rules recorded.
    pub(crate) fn services(&self) -> HashSet<String> {
        self.recorded().into_iter().map(|r| r.service).collect()
    }

    /// Remove the rules of every service not in `running`.
    pub(crate) async fn retain_services(&self, running: &HashSet<&str>) -> Result<()> {
        let _busy = self.busy.lock().await;
        let ended: Vec<PublishedRule> =
            self.recorded().into_iter().filter(|r| !running.contains(r.service.as_str())).collect();
        if ended.is_empty() {
            return Ok(());
        }
        for rule in &ended {
            let _ = crate::qmp::human_command(&self.vm, &remove_command(&rule.host, rule.host_port)).await;
        }
        self.edit(|rules| rules.retain(|r| !ended.contains(r)))
    }

    async fn add(&self, p: &PortForward) -> Result<()> {
        let rule = format!("tcp:{}:{}-:{}", p.host, p.host_port, p.guest_port);
        let out = crate::qmp::human_command(&self.vm, &format!("hostfwd_add net0 {rule}")).await?;
        if !out.trim().is_empty() {
            return Err(Error::InvalidInput(format!(
                "could not publish {}:{} -> guest port {}: {}",
                p.host,
                p.host_port,
                p.guest_port,
                out.trim()
            )));
        }
        Ok(())
    }

    async fn remove(&self, ports: &[PortForward]) {
        for p in ports {
            let _ = crate::qmp::human_command(&self.vm, &remove_command(&p.host, p.host_port)).await;
        }
    }

    fn recorded(&self) -> Vec<PublishedRule> {
        std::fs::read(self.vm.published()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    fn edit(&self, f: impl FnOnce(&mut Vec<PublishedRule>)) -> Result<()> {
        let mut rules = self.recorded();
        f(&mut rules);
        let path = self.vm.published();
        pyro_sys::write_atomic(&path, &serde_json::to_vec(&rules).expect("serialisable"))
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }
}

/// The monitor command that removes the rule on `host:host_port`.
fn remove_command(host: &str, host_port: u16) -> String {
    format!("hostfwd_remove net0 tcp:{host}:{host_port}")
}

/// A forward is only ever published on host loopback, and its address goes into a monitor
/// command line: it must be a plain IPv4 loopback address, nothing else.
fn check_forward(p: &PortForward) -> Result<()> {
    match p.host.parse::<Ipv4Addr>() {
        Ok(ip) if ip.is_loopback() && p.host_port != 0 && p.guest_port != 0 => Ok(()),
        _ => Err(Error::InvalidInput(format!(
            "a published port must forward a loopback address and non-zero ports (got {}:{} -> {})",
            p.host, p.host_port, p.guest_port
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(host: &str, host_port: u16) -> PortForward {
        PortForward { host: host.into(), host_port, guest_port: 80 }
    }

    #[test]
    fn only_loopback_forwards_reach_the_monitor_command_line() {
        assert!(check_forward(&fwd("127.0.0.1", 8080)).is_ok());
        for bad in ["0.0.0.0", "10.0.2.2", "127.0.0.1 -:22,hostfwd", "localhost", ""] {
            assert!(check_forward(&fwd(bad, 8080)).is_err(), "{bad:?}");
        }
        assert!(check_forward(&fwd("127.0.0.1", 0)).is_err());
    }

    #[tokio::test]
    async fn a_vm_without_the_policy_publishes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let ports = Ports::new(VmDir::new(tmp.path()), false);
        let e = ports.publish("web", &[fwd("127.0.0.1", 8080)]).await.unwrap_err();
        assert!(e.to_string().contains("does not allow published ports"), "{e}");
        assert!(!VmDir::new(tmp.path()).published().exists());
    }

    #[tokio::test]
    async fn ended_services_lose_their_records_and_running_ones_keep_them() {
        let tmp = tempfile::tempdir().unwrap();
        let ports = Ports::new(VmDir::new(tmp.path()), true);
        ports
            .edit(|r| {
                for (service, port) in [("web", 8080), ("db", 8081)] {
                    r.push(PublishedRule {
                        service: service.into(),
                        host: "127.0.0.1".into(),
                        host_port: port,
                        guest_port: 80,
                    });
                }
            })
            .unwrap();
        assert_eq!(ports.services(), HashSet::from(["web".to_string(), "db".to_string()]));
        // No QEMU here: the monitor commands fail, the records are still settled.
        ports.retain_services(&HashSet::from(["web"])).await.unwrap();
        assert_eq!(ports.services(), HashSet::from(["web".to_string()]));
        ports.unpublish(&[fwd("127.0.0.1", 8080)]).await.unwrap();
        assert!(ports.services().is_empty());
    }
}
