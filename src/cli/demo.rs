//! `switchyard demo`: a working set-up in one command, for a first look.
//!
//! Creates a throw-away inventory (in a temporary directory, removed on
//! exit), starts simulated devices on free ports and registers them, starts
//! a broker on a socket in that directory with an integrated service named
//! `demo` over the inventory, and prints commands to try. Runs until Ctrl-C.

use std::process::ExitCode;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::CliError;
use crate::broker::registry::RegistrySettings;
use crate::broker::{self, BrokerConfig};
use crate::config::Settings;
use crate::secret::Secret;
use crate::service::inventory::{DriverKind, Inventory, NewDevice};
use crate::sim::server::{SimCredentials, SimFleet, SimFleetConfig};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many simulated SSH devices to start.
    #[arg(long, default_value_t = 3)]
    pub devices: usize,
}

/// The demo's admin password. Demo only: the inventory is temporary.
const DEMO_ADMIN_PASSWORD: &str = "switchyard-demo";

/// `socket`: the global `--socket`, else a socket in the demo's directory.
pub async fn run(
    args: DemoArgs,
    socket: Option<std::path::PathBuf>,
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<ExitCode, CliError> {
    let dir = tempfile::Builder::new()
        .prefix("switchyard-demo-")
        .tempdir()
        .map_err(CliError::io("cannot create a temporary directory"))?;
    let db = dir.path().join("inventory.db");
    let admin_file = dir.path().join("admin-password");
    std::fs::write(&admin_file, format!("{DEMO_ADMIN_PASSWORD}\n"))
        .map_err(CliError::io("cannot write the demo admin password file"))?;

    let credentials = SimCredentials::default();
    let fleet = SimFleet::start(SimFleetConfig {
        count: args.devices.max(1),
        credentials: credentials.clone(),
        ..Default::default()
    })
    .await
    .map_err(CliError::io("cannot start simulated devices"))?;

    let mut inv = Inventory::init(&db, &Secret::new(DEMO_ADMIN_PASSWORD))?;
    for ep in fleet.endpoints() {
        inv.add_device(&NewDevice {
            name: ep.name.clone(),
            host: ep.addr.ip().to_string(),
            port: ep.port,
            device_type: "IOS-XE".into(),
            driver: DriverKind::Ssh,
            attributes: [("site".to_string(), "demo".to_string())].into(),
            username: Some(credentials.username.clone()),
            password: Some(credentials.password.clone()),
            private_key: None,
            legacy_algorithms: None,
            enable_password: None,
            session: None,
        })?;
    }
    inv.add_device(&NewDevice {
        name: "inproc-1".into(),
        host: "simulated".into(),
        port: 22,
        device_type: "IOS-XE".into(),
        driver: DriverKind::Simulator,
        attributes: [("site".to_string(), "demo".to_string())].into(),
        username: None,
        password: None,
        private_key: None,
        legacy_algorithms: None,
        enable_password: None,
        session: None,
    })?;
    drop(inv);

    let socket = socket.unwrap_or_else(|| dir.path().join("broker.sock"));
    let config = BrokerConfig {
        socket: socket.clone(),
        socket_group: settings.broker.socket_group,
        registry: RegistrySettings {
            state_dir: Some(dir.path().join("state")),
            ..settings.broker.registry.clone()
        },
        drain_timeout: settings.broker.drain_timeout,
        domains: settings.domains.clone(),
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let broker = broker::run(
        config,
        shutdown.clone(),
        move |_| {
            let _ = ready_tx.send(());
        },
        |notice| eprintln!("switchyard demo: {}", super::broker::drain_message(notice)),
    );
    let setup = async {
        if ready_rx.await.is_err() {
            return Ok(());
        }
        let mut client = crate::api::client::connect(&socket)
            .await
            .map_err(|e| CliError::Usage(format!("cannot reach the demo broker: {e}")))?;
        client
            .service_integrated(crate::api::pb::ServiceIntegratedRequest {
                name: "demo".into(),
                db: db.display().to_string(),
                admin_password: DEMO_ADMIN_PASSWORD.into(),
                ..Default::default()
            })
            .await?;
        print_welcome(&socket, &fleet, &db);
        Ok::<_, CliError>(())
    };
    let (served, setup) = futures::join!(broker, setup);
    if let Err(e) = setup {
        shutdown.cancel();
        return Err(e);
    }
    served.map_err(|e| CliError::Usage(e.to_string()))?;
    fleet.shutdown().await;
    drop(dir);
    Ok(ExitCode::SUCCESS)
}

fn print_welcome(socket: &std::path::Path, fleet: &SimFleet, db: &std::path::Path) {
    // This is switchyardd (the front handed the demo over); the commands
    // to try are for the lean front beside it, when it is there.
    let exe = std::env::current_exe()
        .map(|own| {
            let front = own.with_file_name("switchyard");
            if front.exists() { front } else { own }
        })
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "switchyard".into());
    let first = &fleet.endpoints()[0];
    println!("Switchyard demo is running: a broker with an integrated service named `demo`.");
    println!("  broker socket: {}", socket.display());
    println!("  inventory:     {}", db.display());
    for ep in fleet.endpoints() {
        println!(
            "  device:        {} (simulated, SSH on {})",
            ep.name, ep.addr
        );
    }
    println!("  device:        inproc-1 (in-process simulator)");
    println!();
    println!("Try, in another terminal:");
    println!("  export SWITCHYARD_SOCKET={}", socket.display());
    println!("  {exe} inventory demo");
    println!(
        "  {exe} exec demo {} inproc-1 -c 'show version' -c 'show ip interface brief'",
        first.name
    );
    println!("  {exe} terminal demo {}", first.name);
    println!("  {exe} status");
    println!("Python (pip install ./clients/python):");
    println!(
        "  SWITCHYARD_DB={} SWITCHYARD_ADMIN_PASSWORD={DEMO_ADMIN_PASSWORD} python3 clients/python/examples/quickstart.py",
        db.display()
    );
    println!();
    println!("Press Ctrl-C to stop; everything above is removed.");
}
