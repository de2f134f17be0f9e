//! Logging setup: journald with structured fields under systemd
//! (`JOURNAL_STREAM` set), otherwise one line per record on stderr with the
//! key-value pairs appended. Keys become journal fields in upper case
//! (`message_id` → `MESSAGE_ID`, `spotter_source` → `SPOTTER_SOURCE`).

use std::io::Write;

use log::{LevelFilter, Log, Metadata, Record};

/// Errors installing the logger.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("journald logger: {0}")]
    Journal(#[source] std::io::Error),
    #[error("a logger is already installed")]
    AlreadySet,
}

pub fn parse_level(s: &str) -> LevelFilter {
    s.parse().unwrap_or(LevelFilter::Info)
}

/// Install the logger for this process.
pub fn init(level: LevelFilter) -> Result<(), LoggingError> {
    if systemd_journal_logger::connected_to_journal() {
        systemd_journal_logger::JournalLog::new()
            .map_err(LoggingError::Journal)?
            .with_syslog_identifier("spotter".to_string())
            .install()
            .map_err(|_| LoggingError::AlreadySet)?;
    } else {
        log::set_boxed_logger(Box::new(StderrLog)).map_err(|_| LoggingError::AlreadySet)?;
    }
    log::set_max_level(level);
    Ok(())
}

/// Change the level at run time (SIGHUP reload).
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

struct StderrLog;

struct KvLine<'a>(&'a mut String);

impl<'kvs> log::kv::VisitSource<'kvs> for KvLine<'_> {
    fn visit_pair(&mut self, key: log::kv::Key<'kvs>, value: log::kv::Value<'kvs>) -> Result<(), log::kv::Error> {
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
