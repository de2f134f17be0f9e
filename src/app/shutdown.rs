//! The ordered shutdown, a protocol of four steps:
//! 1. **stop**: trigger the one shutdown token. The capture thread stops
//!    between frames (its sleeps wake at once), the frame slot closes so the
//!    inference thread takes no new item, and the API stops accepting
//!    connections (open requests go on).
//! 2. **drain**: wait (bounded) for the inference in flight, then for the
//!    capture thread; both are the token's workers.
//! 3. **flush**: after the last result, return GPIO outputs to their safe
//!    state, let the MQTT publisher send what it can (bounded), stop the
//!    pruner, flush the store.
//! 4. **exit**: wait (bounded) for the API's open requests, close the store,
//!    and say why the daemon stopped.

use std::time::Duration;

use super::monitor::Exit;
use super::start::Daemon;
use super::API_GRACE;
use crate::core::ids;
use crate::systemd::Notifier;

/// How long shutdown waits for the inference in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long shutdown waits for the capture thread to return.
const CAPTURE_TIMEOUT: Duration = Duration::from_secs(3);

/// Stop every part of `d` in order; Err: why the daemon stopped, when it was
/// not asked to.
pub(super) async fn shutdown(d: Daemon, exit: Exit, notifier: &Notifier) -> anyhow::Result<()> {
    let Daemon {
        store,
        mqtt,
        rollout,
        pruner,
        gpio,
        shutdown,
        capture,
        inference,
        mut api_task,
        ..
    } = d;
    // Shutdown protocol: stop, drain, flush, close, exit.
    log::info!(message_id = ids::STOPPING; "stopping: capture and new connections, then inference in flight, then store flush, then open requests");
    notifier.stopping();
    shutdown.trigger();
    let drained = tokio::task::spawn_blocking(move || inference.join());
    if tokio::time::timeout(DRAIN_TIMEOUT, drained).await.is_err() {
        log::warn!(
            "inference did not finish within {} s; flushing anyway",
            DRAIN_TIMEOUT.as_secs()
        );
    }
    // The capture thread stops between frames; a frame read blocks at most
    // for the source's stall timeout (an ioctl or a pacing sleep, which the
    // token wakes). Wait for every worker of the token, then join it.
    let left = {
        let token = shutdown.clone();
        tokio::task::spawn_blocking(move || token.wait_workers(CAPTURE_TIMEOUT))
            .await
            .unwrap_or_default()
    };
    if left.is_empty() {
        // Its worker guard is dropped as the thread returns: a prompt join.
        // One capture thread per source.
        let _ = tokio::task::spawn_blocking(move || {
            for c in capture {
                let _ = c.join();
            }
        })
        .await;
    } else {
        log::warn!(
            "{} did not stop within {} s (blocked reading the source?); exiting anyway",
            left.join(", "),
            CAPTURE_TIMEOUT.as_secs()
        );
    }
    // The rollout worker (issue 22) is a worker of the token: joined when it
    // has returned (a download blocked on the network is left behind).
    if let Some(r) = rollout.filter(|r| r.is_finished()) {
        let _ = tokio::task::spawn_blocking(move || r.join()).await;
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
    if !matches!(exit, Exit::Api(_))
        && tokio::time::timeout(API_GRACE + Duration::from_millis(500), &mut api_task)
            .await
            .is_err()
    {
        log::warn!("API did not stop within its grace period");
    }
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
