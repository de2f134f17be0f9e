//! `spotter systemd-generator`: write the unit drop-in for a privileged API
//! port ([`crate::systemd::generate`]) without ever failing the boot.

use std::path::Path;

use crate::{config, logging};

/// Generators run early at boot, logging to the kernel log: say what is
/// wrong but never fail the boot transaction.
pub(super) fn generate(path: &Path, normal_dir: &Path) {
    let _ = logging::init(log::LevelFilter::Warn);
    match config::load(path) {
        Ok(s) => match crate::systemd::generate(s.api.listen, normal_dir) {
            Ok(Some(p)) => eprintln!(
                "spotter-generator: api.listen {} is a privileged port; wrote {}",
                s.api.listen,
                p.display()
            ),
            Ok(None) => {}
            Err(e) => eprintln!("spotter-generator: {e}"),
        },
        Err(e) => eprintln!(
            "spotter-generator: {}: {e}; no drop-in written",
            path.display()
        ),
    }
}
