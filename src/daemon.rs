//! Being a good systemd citizen: readiness, status, stopping and watchdog
//! notifications (`sd_notify`). Outside systemd (no `NOTIFY_SOCKET`) every
//! call is a no-op; a failure to notify is logged, never fatal.

use std::time::Duration;

use actix::prelude::*;
use sd_notify::NotifyState;
use tracing::{debug, warn};

fn notify(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        warn!(error = %e, "cannot notify systemd");
    }
}

/// The listeners serve: `READY=1` with a first status line.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A status line a person can read in `systemctl status`.
pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// Shutdown has begun.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec))
}

/// Pings the systemd watchdog from the actor system's own arbiter, at half
/// the interval: if the actor system wedges, the pings stop and systemd
/// restarts the daemon.
pub struct Watchdog {
    period: Duration,
}

impl Watchdog {
    /// Starts the pinger when systemd asked for a watchdog.
    pub fn start_if_enabled() -> Option<Addr<Watchdog>> {
        let interval = watchdog_interval()?;
        let period = interval / 2;
        debug!(?period, "watchdog enabled");
        Some(Watchdog { period }.start())
    }
}

impl Actor for Watchdog {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        notify(&[NotifyState::Watchdog]);
        ctx.run_interval(self.period, |_, _| notify(&[NotifyState::Watchdog]));
    }
}
