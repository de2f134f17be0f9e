//! The ordered shutdown: stop capture, finish the inference in flight
//! (bounded), return GPIO outputs to their safe state, stop the MQTT
//! publisher (bounded) and the pruner, flush the store, close the API
//! (bounded), close the store; then the daemon's exit result for why it
//! stopped.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::monitor::Exit;
use super::start::Daemon;
use super::API_GRACE;
use crate::core::ids;
use crate::systemd::Notifier;

/// How long shutdown waits for the inference in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Stop every part of `d` in order; Err: why the daemon stopped, when it was
/// not asked to.
pub(super) async fn shutdown(d: Daemon, exit: Exit, notifier: &Notifier) -> anyhow::Result<()> {
    let Daemon {
        store,
        mqtt,
        pruner,
        slot,
        gpio,
        stop,
        capture,
        inference,
        mut api_task,
        api_shutdown,
        ..
    } = d;
    // Shutdown protocol: stop, drain, flush, close, exit.
    log::info!(message_id = ids::STOPPING; "stopping: capture, then inference in flight, then store flush, then API");
    notifier.stopping();
    stop.store(true, Ordering::Relaxed);
    slot.close();
    let drained = tokio::task::spawn_blocking(move || inference.join());
    if tokio::time::timeout(DRAIN_TIMEOUT, drained).await.is_err() {
        log::warn!(
            "inference did not finish within {} s; flushing anyway",
            DRAIN_TIMEOUT.as_secs()
        );
    }
    if let Some(gpio) = gpio {
        // After the last result: nothing switches an output on again.
        let _ = tokio::task::spawn_blocking(move || gpio.shutdown()).await;
    }
    if let Some(mqtt) = mqtt {
        // After the last result is stored: it goes out if the broker is up.
        let _ = tokio::task::spawn_blocking(move || mqtt.stop()).await;
    }
    let _ = tokio::task::spawn_blocking(move || pruner.stop()).await;
    let flushed = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.flush()).await
    };
    match flushed {
        Ok(Ok(())) => log::info!("store flushed"),
        Ok(Err(e)) => log::error!("store flush failed: {e}"),
        Err(e) => log::error!("store flush task failed: {e}"),
    }
    let _ = api_shutdown.send(true);
    if !matches!(exit, Exit::Api(_))
        && tokio::time::timeout(API_GRACE + Duration::from_millis(500), &mut api_task)
            .await
            .is_err()
    {
        log::warn!("API did not stop within its grace period");
    }
    // The capture thread may be blocked in a pacing sleep or an ioctl with a
    // timeout; it checks the stop flag between frames. Don't wait for it.
    drop(capture);
    // The API task and the pipeline threads have let go of their handles;
    // this is the store's last owner (a poisoned sled must not be dropped).
    store.close();
    match exit {
        Exit::Api(Ok(Ok(()))) => anyhow::bail!("the HTTPS API stopped unexpectedly"),
        Exit::Api(Ok(Err(e))) => Err(anyhow::Error::new(e).context("the HTTPS API failed")),
        Exit::Api(Err(e)) => Err(anyhow::Error::new(e).context("the HTTPS API task panicked")),
        Exit::RestartStore => anyhow::bail!("the result store needs reopening after a write error (see the DISK_FULL log entry); exiting for systemd to restart Spotter"),
        Exit::Signal => Ok(()),
    }
}
