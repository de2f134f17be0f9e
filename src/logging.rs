//! Logging setup: journald with structured fields under systemd
//! (`JOURNAL_STREAM` set), otherwise one line per record on stderr with the
//! key-value pairs appended. Keys become journal fields in upper case
//! (`message_id` → `MESSAGE_ID`, `spotter_source` → `SPOTTER_SOURCE`).
//!
//! Both loggers sit behind [`target_filter`]: the global level (config,
//! SIGHUP) applies to everything, and a few noisy dependency targets are
//! capped below it (rustls warns "Illegal SNI hostname" on every connection
//! made to an IP address, which is how clients reach the appliance).

use std::io::Write;

use env_filter::{Filter, FilteredLog};
use log::{LevelFilter, Log, Metadata, Record};

/// Errors installing the logger.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoggingError {
    #[error("journald logger: {0}")]
    Journal(#[source] std::io::Error),
    #[error("a logger is already installed")]
    AlreadySet,
}

pub(crate) fn parse_level(s: &str) -> LevelFilter {
    s.parse().unwrap_or(LevelFilter::Info)
}

/// Per-target caps under the global level: every target passes (the global
/// `log::max_level` decides), except `rustls`, which logs only errors. Its
/// warnings are per connection and not actionable here: "Illegal SNI
/// hostname received" whenever a client connects by IP address.
pub(crate) fn target_filter() -> Filter {
    env_filter::Builder::new()
        .filter_level(LevelFilter::Trace)
        .filter_module("rustls", LevelFilter::Error)
        .build()
}

/// Install the logger for this process.
pub(crate) fn init(level: LevelFilter) -> Result<(), LoggingError> {
    let logger: Box<dyn Log> = if systemd_journal_logger::connected_to_journal() {
        let journal = systemd_journal_logger::JournalLog::new()
            .map_err(LoggingError::Journal)?
            .with_syslog_identifier("spotter".to_string());
        Box::new(FilteredLog::new(journal, target_filter()))
    } else {
        Box::new(FilteredLog::new(StderrLog, target_filter()))
    };
    log::set_boxed_logger(logger).map_err(|_| LoggingError::AlreadySet)?;
    log::set_max_level(level);
    Ok(())
}

/// Change the level at run time (SIGHUP reload).
pub(crate) fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

struct StderrLog;

struct KvLine<'a>(&'a mut String);

impl<'kvs> log::kv::VisitSource<'kvs> for KvLine<'_> {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        use std::fmt::Write as _;
        let _ = write!(self.0, " {}={}", key, value);
        Ok(())
    }
}

impl Log for StderrLog {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let mut kv = String::new();
        let _ = r.key_values().visit(&mut KvLine(&mut kv));
        let line = format!("{:<5} {}: {}{}\n", r.level(), r.target(), r.args(), kv);
        // stderr is unbuffered; a failed write has nowhere better to go.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Level;

    fn passes(target: &str, level: Level) -> bool {
        target_filter().enabled(&Metadata::builder().target(target).level(level).build())
    }

    // Would catch the rustls cap missing (a WARN per connection by IP
    // address floods the journal) or set so low that rustls errors vanish.
    #[test]
    fn rustls_is_capped_at_error() {
        assert!(!passes("rustls::server::hs", Level::Warn));
        assert!(!passes("rustls", Level::Info));
        assert!(passes("rustls::conn", Level::Error));
    }

    // Would catch the cap leaking onto other targets: Spotter's own records
    // must be limited only by the global (configured) level.
    #[test]
    fn other_targets_are_left_to_the_global_level() {
        for level in [
            Level::Error,
            Level::Warn,
            Level::Info,
            Level::Debug,
            Level::Trace,
        ] {
            assert!(passes("spotter::api", level), "{level}");
            assert!(passes("sled::pagecache", level), "{level}");
        }
    }
}
