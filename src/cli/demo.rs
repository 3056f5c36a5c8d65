//! `switchyard demo`: a working set-up in one command, for a first look.
//!
//! Creates a throw-away inventory (in a temporary directory, removed on
//! exit), starts simulated devices on free ports, registers them, and
//! prints commands to try. Runs until Ctrl-C.

use std::process::ExitCode;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::CliError;
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

pub async fn run(args: DemoArgs, shutdown: CancellationToken) -> Result<ExitCode, CliError> {
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
    })?;
    drop(inv);

    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "switchyard".into());
    let base = format!(
        "{exe} service --db {} --admin-password-file {}",
        db.display(),
        admin_file.display()
    );
    let first = &fleet.endpoints()[0];
    println!("Switchyard demo is running.");
    println!("  inventory:  {}", db.display());
    for ep in fleet.endpoints() {
        println!("  device:     {} (SSH on {})", ep.name, ep.addr);
    }
    println!("  device:     inproc-1 (in-process simulator)");
    println!();
    println!("Try, in another terminal:");
    println!("  {base} device list");
    println!(
        "  {base} exec {} inproc-1 -c 'show version' -c 'show ip interface brief'",
        first.name
    );
    println!(
        "  sshpass -p admin ssh -o StrictHostKeyChecking=no -p {} admin@127.0.0.1 'show running-config'",
        first.port
    );
    println!();
    println!("Press Ctrl-C to stop; everything above is removed.");
    shutdown.cancelled().await;
    fleet.shutdown().await;
    drop(dir);
    Ok(ExitCode::SUCCESS)
}
