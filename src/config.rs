//! The only module that knows the configuration file format.
//!
//! Settings come from, in rising priority: built-in defaults, a TOML file
//! (`--config PATH`, else `$XDG_CONFIG_HOME/switchyard/config.toml` when it
//! exists), and `SWITCHYARD_*` environment variables where `__` separates
//! sections (`SWITCHYARD_SSH__IDLE_TIMEOUT_SECS=30`). Everything is converted
//! to domain types here; no other module sees these structs' field names.
//! `deploy/config/switchyard.toml` documents every option and its default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::broker::direct_link::LinkConfig;
use crate::broker::registry::RegistrySettings;
use crate::logging::LogFormat;
use crate::service::drivers::ssh::SshDriverConfig;
use crate::service::exec_limits::{ExecCaps, ExecLimits};

/// The largest `runtime.worker_threads` accepted: far above any host's
/// cores, far below what makes tokio fail to spawn threads.
pub const MAX_WORKER_THREADS: usize = 1024;

/// Errors while loading settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {} does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a key or value the settings do not
    /// take. `line` is 1-based, when the parser could place the mistake.
    #[error(
        "config file {}{}: {message}",
        path.display(),
        line.map(|l| format!(", line {l}")).unwrap_or_default()
    )]
    File {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    /// Deliberately not a `#[source]`: the message already holds it, and
    /// an error chain printer would print it twice.
    #[error("invalid configuration: {0}")]
    Invalid(config::ConfigError),
    #[error("invalid configuration: {0}")]
    Value(String),
}

/// Everything the daemons and commands read from configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Async worker threads (`None`: one per core, or $TOKIO_WORKER_THREADS).
    pub runtime_threads: Option<usize>,
    pub log_format: LogFormat,
    pub log_filter: String,
    pub ssh: SshDriverConfig,
    /// Exec caps and the device slots of this process's services (the
    /// `service run` daemon, `service exec`, integrated mode).
    pub exec: ExecLimits,
    pub broker: BrokerSettings,
    /// Relays known by name, for `--domain NAME` logins.
    pub domains: Vec<Domain>,
    /// How an enrolled service's relay agent reaches its relay
    /// (`[relay_agent]`; the mode comes from `--relay-transport`).
    pub relay_agent: crate::service::relay_agent::AgentConfig,
}

/// A relay known by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub name: String,
    /// The relay's HTTPS URL.
    pub url: String,
    /// CA certificates (PEM) to trust for it; `None`: the system's.
    pub ca_file: Option<PathBuf>,
    /// Used when a login names neither a relay nor a domain.
    pub default: bool,
}

/// Broker settings, in domain terms.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// Front-door socket (`None`: the default path).
    pub socket: Option<PathBuf>,
    pub socket_group: Option<u32>,
    pub registry: RegistrySettings,
    pub drain_timeout: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    #[serde(default)]
    runtime: RuntimeSection,
    #[serde(default)]
    log: LogSection,
    #[serde(default)]
    ssh: SshSection,
    #[serde(default)]
    exec: ExecSection,
    #[serde(default)]
    broker: BrokerSection,
    #[serde(default)]
    domains: std::collections::BTreeMap<String, DomainSection>,
    #[serde(default)]
    proxy: ProxySection,
    #[serde(default)]
    relay_agent: RelayAgentSection,
}

/// `[relay_agent]`: how `service run` reaches the relay it enrolled with.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RelayAgentSection {
    quic_head_start_secs: f64,
    quic_probe_secs: f64,
    tcp_drain_secs: f64,
}

impl Default for RelayAgentSection {
    fn default() -> Self {
        let d = crate::service::relay_agent::AgentConfig::default();
        Self {
            quic_head_start_secs: d.transport.quic_head_start.as_secs_f64(),
            quic_probe_secs: d.transport.quic_probe.as_secs_f64(),
            tcp_drain_secs: d.tcp_drain.as_secs_f64(),
        }
    }
}

impl RelayAgentSection {
    fn into_config(self) -> Result<crate::service::relay_agent::AgentConfig, ConfigError> {
        let probe = secs("relay_agent.quic_probe_secs", self.quic_probe_secs)?;
        if probe.is_zero() {
            return Err(ConfigError::Value(
                "relay_agent.quic_probe_secs must be more than 0".into(),
            ));
        }
        Ok(crate::service::relay_agent::AgentConfig {
            transport: crate::transport_policy::TransportPolicy {
                quic_head_start: secs(
                    "relay_agent.quic_head_start_secs",
                    self.quic_head_start_secs,
                )?,
                quic_probe: probe,
                ..Default::default()
            },
            tcp_drain: secs("relay_agent.tcp_drain_secs", self.tcp_drain_secs)?,
        })
    }
}

/// `[proxy]`: the HTTP proxy for outbound TCP (to services' `rpc_url`s).
/// Unset: `HTTPS_PROXY`/`https_proxy` and `NO_PROXY`/`no_proxy`, as curl.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct ProxySection {
    url: Option<String>,
    no_proxy: Option<String>,
    /// Host (and its subdomains) → that host's proxy URL.
    domains: std::collections::BTreeMap<String, String>,
}

impl ProxySection {
    fn into_rule(self) -> Result<crate::proxy::ProxyRule, ConfigError> {
        use crate::proxy::{NoProxy, Proxy, ProxyRule, from_env};
        let bad = |e: crate::proxy::ProxyError| ConfigError::Value(format!("proxy.url: {e}"));
        let domains = self
            .domains
            .iter()
            .map(|(host, url)| {
                Proxy::parse(url, None)
                    .map(|p| (host.clone(), p))
                    .map_err(|e| ConfigError::Value(format!("proxy.domains.{host:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rule = match self.url.filter(|u| !u.is_empty()) {
            Some(url) => Ok(ProxyRule {
                proxy: Some(Proxy::parse(&url, None).map_err(bad)?),
                no_proxy: NoProxy::parse(self.no_proxy.as_deref().unwrap_or("")),
                domains: Vec::new(),
            }),
            None => {
                let env = from_env(|k| std::env::var(k).ok()).map_err(|e| {
                    ConfigError::Value(format!("HTTPS_PROXY (from the environment): {e}"))
                })?;
                Ok(match env {
                    Some((proxy, env_no_proxy)) => ProxyRule {
                        proxy: Some(proxy),
                        no_proxy: match self.no_proxy {
                            Some(list) => NoProxy::parse(&list),
                            None => env_no_proxy,
                        },
                        domains: Vec::new(),
                    },
                    None => ProxyRule::default(),
                })
            }
        };
        rule.map(|rule| ProxyRule { domains, ..rule })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainSection {
    url: String,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    default: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct BrokerSection {
    socket: Option<PathBuf>,
    socket_group: Option<String>,
    share_group: Option<String>,
    state_dir: Option<PathBuf>,
    idle_timeout_secs: f64,
    connect_timeout_secs: f64,
    named_idle_timeout_secs: f64,
    attach_grace_secs: f64,
    max_sessions_per_user: usize,
    max_links_per_user: usize,
    max_named_per_user: usize,
    reconnect_min_secs: f64,
    reconnect_max_secs: f64,
    drain_timeout_secs: f64,
    transport: String,
    quic_head_start_secs: f64,
    quic_probe_secs: f64,
}

impl Default for BrokerSection {
    fn default() -> Self {
        let r = RegistrySettings::default();
        Self {
            socket: None,
            socket_group: None,
            share_group: None,
            state_dir: None,
            idle_timeout_secs: r.link.idle_timeout.as_secs_f64(),
            connect_timeout_secs: r.link.connect_timeout.as_secs_f64(),
            named_idle_timeout_secs: r.named_idle_timeout.as_secs_f64(),
            attach_grace_secs: r.attach_grace.as_secs_f64(),
            max_sessions_per_user: r.max_sessions_per_user,
            max_links_per_user: r.max_links_per_user,
            max_named_per_user: r.max_named_per_user,
            reconnect_min_secs: r.link.reconnect_min.as_secs_f64(),
            reconnect_max_secs: r.link.reconnect_max.as_secs_f64(),
            drain_timeout_secs: 10.0,
            transport: "auto".into(),
            quic_head_start_secs: r.link.transport.quic_head_start.as_secs_f64(),
            quic_probe_secs: r.link.transport.quic_probe.as_secs_f64(),
        }
    }
}

/// The default state directory: `$STATE_DIRECTORY` (systemd), else
/// `$XDG_STATE_HOME/switchyard`, else `~/.local/state/switchyard`.
pub fn default_state_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("switchyard"))
}

fn group_id(option: &str, name: Option<String>) -> Result<Option<u32>, ConfigError> {
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    match nix::unistd::Group::from_name(&name) {
        Ok(Some(group)) => Ok(Some(group.gid.as_raw())),
        Ok(None) => Err(ConfigError::Value(format!(
            "{option}: no group named {name:?}"
        ))),
        Err(e) => Err(ConfigError::Value(format!(
            "{option}: cannot look up group {name:?}: {e}"
        ))),
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RuntimeSection {
    /// 0: one per core (or $TOKIO_WORKER_THREADS).
    worker_threads: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LogSection {
    format: String,
    filter: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: "text".into(),
            filter: "info".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SshSection {
    connect_timeout_secs: f64,
    command_timeout_secs: f64,
    idle_timeout_secs: f64,
    max_sessions_per_connection: usize,
    max_connections_per_device: usize,
    max_output_bytes: u64,
    legacy_algorithms: bool,
}

impl Default for SshSection {
    fn default() -> Self {
        let d = SshDriverConfig::default();
        Self {
            connect_timeout_secs: d.connect_timeout.as_secs_f64(),
            command_timeout_secs: d.command_timeout.as_secs_f64(),
            idle_timeout_secs: d.idle_timeout.as_secs_f64(),
            max_sessions_per_connection: d.max_sessions_per_connection,
            max_connections_per_device: d.max_connections_per_device,
            max_output_bytes: d.max_output_bytes,
            legacy_algorithms: d.legacy_algorithms,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ExecSection {
    max_devices_per_request: usize,
    max_commands_per_request: usize,
    max_command_bytes_per_request: usize,
    max_concurrent_devices: usize,
}

impl Default for ExecSection {
    fn default() -> Self {
        let d = ExecCaps::default();
        Self {
            max_devices_per_request: d.max_devices,
            max_commands_per_request: d.max_commands,
            max_command_bytes_per_request: d.max_command_bytes,
            max_concurrent_devices: d.max_concurrent_devices,
        }
    }
}

impl ExecSection {
    fn into_limits(self) -> Result<ExecLimits, ConfigError> {
        for (key, value) in [
            ("max_devices_per_request", self.max_devices_per_request),
            ("max_commands_per_request", self.max_commands_per_request),
            (
                "max_command_bytes_per_request",
                self.max_command_bytes_per_request,
            ),
            ("max_concurrent_devices", self.max_concurrent_devices),
        ] {
            if value == 0 {
                return Err(ConfigError::Value(format!("exec.{key} must be at least 1")));
            }
        }
        Ok(ExecLimits::new(ExecCaps {
            max_devices: self.max_devices_per_request,
            max_commands: self.max_commands_per_request,
            max_command_bytes: self.max_command_bytes_per_request,
            max_concurrent_devices: self.max_concurrent_devices,
        }))
    }
}

/// The default config file location, if one can be named.
pub fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("switchyard").join("config.toml"))
}

/// Whether any configuration applies to this run: a file named by
/// `explicit` (`--config` or `$SWITCHYARD_CONFIG`), a file at
/// [`default_config_path`], or a `SWITCHYARD_<SECTION>__<KEY>` variable.
/// Reads no file, so the lean front can ask it and hand the command to
/// `switchyardd` (which runs [`load`]) only when the answer is yes.
pub fn in_use(explicit: Option<&Path>) -> bool {
    explicit.is_some()
        || std::env::vars_os().any(|(k, _)| is_setting_variable(&k.to_string_lossy()))
        || default_config_path().is_some_and(|p| p.exists())
}

/// `SWITCHYARD_<SECTION>__<KEY>`: a setting. Other `SWITCHYARD_*`
/// variables (`SWITCHYARD_SOCKET`, `SWITCHYARD_DB`, ...) are command
/// defaults.
fn is_setting_variable(name: &str) -> bool {
    name.strip_prefix("SWITCHYARD_")
        .is_some_and(|rest| rest.contains("__"))
}

/// Loads settings. An explicitly named file must exist; the default file is
/// read only when present.
pub fn load(explicit: Option<&Path>) -> Result<Settings, ConfigError> {
    let mut builder = config::Config::builder();
    match explicit {
        Some(path) if !path.exists() => {
            return Err(ConfigError::Missing {
                path: path.to_path_buf(),
            });
        }
        Some(path) => {
            check_file(path)?;
            builder = builder.add_source(config::File::from(path));
        }
        None => {
            if let Some(path) = default_config_path().filter(|p| p.exists()) {
                check_file(&path)?;
                builder = builder.add_source(config::File::from(path));
            }
        }
    }
    let overrides: config::Map<String, String> = std::env::vars()
        .filter(|(k, _)| is_setting_variable(k))
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix("SWITCHYARD")
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .source(Some(overrides)),
    );
    let raw: FileSettings = builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(ConfigError::Invalid)?;
    raw.into_settings()
}

/// Checks the file on its own, so that a mistake in it is reported with
/// the file's name and the line (the merged view of file and environment
/// the `config` crate builds knows neither).
fn check_file(path: &Path) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    match toml::from_str::<FileSettings>(&text) {
        Ok(_) => Ok(()),
        Err(e) => Err(ConfigError::File {
            path: path.to_path_buf(),
            line: e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1),
            message: e.message().trim().to_string(),
        }),
    }
}

fn secs(name: &str, value: f64) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| ConfigError::Value(format!("{name} must be a non-negative number of seconds")))
}

impl FileSettings {
    fn into_settings(self) -> Result<Settings, ConfigError> {
        let log_format = match self.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            "journald" => LogFormat::Journald,
            other => {
                return Err(ConfigError::Value(format!(
                    "log.format must be \"text\", \"json\" or \"journald\", not {other:?}"
                )));
            }
        };
        let s = self.ssh;
        if s.max_sessions_per_connection == 0 {
            return Err(ConfigError::Value(
                "ssh.max_sessions_per_connection must be at least 1".into(),
            ));
        }
        if s.max_connections_per_device == 0 {
            return Err(ConfigError::Value(
                "ssh.max_connections_per_device must be at least 1".into(),
            ));
        }
        let ssh = SshDriverConfig {
            connect_timeout: secs("ssh.connect_timeout_secs", s.connect_timeout_secs)?,
            command_timeout: secs("ssh.command_timeout_secs", s.command_timeout_secs)?,
            idle_timeout: secs("ssh.idle_timeout_secs", s.idle_timeout_secs)?,
            max_sessions_per_connection: s.max_sessions_per_connection,
            max_connections_per_device: s.max_connections_per_device,
            max_output_bytes: s.max_output_bytes,
            legacy_algorithms: s.legacy_algorithms,
        };
        let exec = self.exec.into_limits()?;
        if self.runtime.worker_threads > MAX_WORKER_THREADS {
            return Err(ConfigError::Value(format!(
                "runtime.worker_threads is {}; at most {MAX_WORKER_THREADS} (0: one per core)",
                self.runtime.worker_threads
            )));
        }
        let b = self.broker;
        let broker = BrokerSettings {
            socket: b.socket,
            socket_group: group_id("broker.socket_group", b.socket_group)?,
            drain_timeout: secs("broker.drain_timeout_secs", b.drain_timeout_secs)?,
            registry: RegistrySettings {
                ssh: ssh.clone(),
                exec: exec.clone(),
                link: LinkConfig {
                    idle_timeout: secs("broker.idle_timeout_secs", b.idle_timeout_secs)?,
                    connect_timeout: secs("broker.connect_timeout_secs", b.connect_timeout_secs)?,
                    reconnect_min: secs("broker.reconnect_min_secs", b.reconnect_min_secs)?,
                    reconnect_max: secs("broker.reconnect_max_secs", b.reconnect_max_secs)?,
                    transport: crate::broker::dialer::TransportPolicy {
                        mode: crate::broker::dialer::TransportMode::parse(&b.transport)
                            .ok_or_else(|| {
                                ConfigError::Value(format!(
                                    "broker.transport is {:?}; one of \"auto\", \"quic\", \"tcp\"",
                                    b.transport
                                ))
                            })?,
                        quic_head_start: secs(
                            "broker.quic_head_start_secs",
                            b.quic_head_start_secs,
                        )?,
                        quic_probe: secs("broker.quic_probe_secs", b.quic_probe_secs)?,
                    },
                    ..Default::default()
                },
                named_idle_timeout: secs(
                    "broker.named_idle_timeout_secs",
                    b.named_idle_timeout_secs,
                )?,
                attach_grace: secs("broker.attach_grace_secs", b.attach_grace_secs)?,
                max_sessions_per_user: match b.max_sessions_per_user {
                    0 => {
                        return Err(ConfigError::Value(
                            "broker.max_sessions_per_user must be at least 1".into(),
                        ));
                    }
                    n => n,
                },
                max_links_per_user: at_least_one(
                    "broker.max_links_per_user",
                    b.max_links_per_user,
                )?,
                max_named_per_user: at_least_one(
                    "broker.max_named_per_user",
                    b.max_named_per_user,
                )?,
                share_group: group_id("broker.share_group", b.share_group)?,
                state_dir: b.state_dir.or_else(default_state_dir),
                proxy: self.proxy.into_rule()?,
            },
        };
        let domains: Vec<Domain> = self
            .domains
            .into_iter()
            .map(|(name, d)| Domain {
                name,
                url: d.url,
                ca_file: d.ca_file,
                default: d.default,
            })
            .collect();
        if domains.iter().filter(|d| d.default).count() > 1 {
            return Err(ConfigError::Value(
                "only one of the domains may be the default".into(),
            ));
        }
        for d in &domains {
            if !d.url.starts_with("https://") {
                return Err(ConfigError::Value(format!(
                    "domains.{}.url must be an https:// URL",
                    d.name
                )));
            }
            crate::relay_url::check_list(&d.url)
                .map_err(|e| ConfigError::Value(format!("domains.{}.url: {e}", d.name)))?;
        }
        Ok(Settings {
            relay_agent: self.relay_agent.into_config()?,
            domains,
            runtime_threads: Some(self.runtime.worker_threads).filter(|n| *n > 0),
            broker,
            log_format,
            log_filter: self.log.filter,
            ssh,
            exec,
        })
    }
}

/// A count limit from the config: zero would refuse everything.
fn at_least_one(key: &str, n: usize) -> Result<usize, ConfigError> {
    match n {
        0 => Err(ConfigError::Value(format!("{key} must be at least 1"))),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[log]\nformat = \"json\"\n[ssh]\nidle_timeout_secs = 2.5\n",
        )
        .unwrap();
        let s = load(Some(&path)).unwrap();
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.ssh.idle_timeout, Duration::from_millis(2500));
        assert_eq!(
            s.ssh.connect_timeout,
            SshDriverConfig::default().connect_timeout
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[ssh]\nconnect_timeout_secs = 1\nidle_timout_secs = 1\n",
        )
        .unwrap();
        let err = load(Some(&path)).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("config file {}, line 3: ", path.display())),
            "{err}"
        );
        assert!(err.contains("idle_timout_secs"), "{err}");
        assert_eq!(err.matches("unknown field").count(), 1, "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        std::fs::write(&path, "[log]\nformat = \"xml\"\n").unwrap();
        let err = load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("log.format"), "{err}");
        std::fs::write(&path, "[ssh]\nmax_connections_per_device = 0\n").unwrap();
        let err = load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("ssh.max_connections_per_device"), "{err}");
        std::fs::write(
            &path,
            "[domains.lab]\nurl = \"https://ops:hunter2@relay.example.net\"\n",
        )
        .unwrap();
        let err = load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("domains.lab.url"), "{err}");
        assert!(err.contains("user name or password"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        std::fs::write(&path, "[broker]\nmax_links_per_user = 0\n").unwrap();
        let err = load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("broker.max_links_per_user"), "{err}");
        std::fs::write(&path, "[relay_agent]\nquic_probe_secs = 0\n").unwrap();
        let err = load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("relay_agent.quic_probe_secs"), "{err}");
        std::fs::write(&path, "[relay_agent]\nquic_probe_secs = 2.5\n").unwrap();
        let probe = load(Some(&path)).unwrap().relay_agent.transport.quic_probe;
        assert_eq!(probe, Duration::from_millis(2500));
    }

    #[test]
    fn the_documented_example_is_valid_and_shows_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config/switchyard.toml");
        let s = load(Some(&path)).unwrap();
        assert_eq!(s.ssh, SshDriverConfig::default());
        assert_eq!(s.exec.caps(), &ExecCaps::default());
        assert_eq!(s.runtime_threads, None);
        let (got, want) = (&s.broker.registry, RegistrySettings::default());
        assert_eq!(got.link.idle_timeout, want.link.idle_timeout);
        assert_eq!(got.link.connect_timeout, want.link.connect_timeout);
        assert_eq!(got.link.reconnect_min, want.link.reconnect_min);
        assert_eq!(got.link.reconnect_max, want.link.reconnect_max);
        assert_eq!(got.named_idle_timeout, want.named_idle_timeout);
        assert_eq!(got.attach_grace, want.attach_grace);
        assert_eq!(got.max_links_per_user, want.max_links_per_user);
        assert_eq!(got.max_named_per_user, want.max_named_per_user);
        if std::env::var_os("HTTPS_PROXY").is_none() && std::env::var_os("https_proxy").is_none() {
            assert!(got.proxy.proxy.is_none());
        }
        assert_eq!(s.broker.drain_timeout, Duration::from_secs(10));
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.log_filter, "info");
        assert_eq!(
            s.relay_agent,
            crate::service::relay_agent::AgentConfig::default()
        );
    }

    #[test]
    fn runtime_and_exec_settings_out_of_range_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[runtime]\nworker_threads = 20000\n").unwrap();
        let err = load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("runtime.worker_threads"), "{err}");
        assert!(err.contains("at most 1024"), "{err}");
        std::fs::write(&path, "[runtime]\nworker_threads = 1024\n").unwrap();
        assert_eq!(load(Some(&path)).unwrap().runtime_threads, Some(1024));
        std::fs::write(&path, "[exec]\nmax_concurrent_devices = 0\n").unwrap();
        let err = load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("exec.max_concurrent_devices"), "{err}");
        std::fs::write(&path, "[exec]\nmax_devices_per_request = 7\n").unwrap();
        assert_eq!(load(Some(&path)).unwrap().exec.caps().max_devices, 7);
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let err = load(Some(Path::new("/nonexistent/switchyard.toml"))).unwrap_err();
        assert!(matches!(err, ConfigError::Missing { .. }));
    }
}
