//! `spotter check-config`: validate a configuration (with its drop-ins) and
//! print the effective settings.

use std::io::Write;
use std::path::Path;

use super::{load_settings, Failure};
use crate::logging;

pub(super) fn check_config(file: &Path) -> Result<(), Failure> {
    let _ = logging::init(log::LevelFilter::Warn);
    let s = load_settings(file)?;
    let mut out = std::io::stdout().lock();
    let files: Vec<String> = s.files.iter().map(|p| p.display().to_string()).collect();
    let _ = writeln!(out, "# valid; read: {}", files.join(", "));
    let _ = write!(out, "{}", s.to_toml());
    Ok(())
}
