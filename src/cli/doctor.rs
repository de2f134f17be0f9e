//! `spotter doctor`: run the installation checks of
//! [`crate::tools::doctor`], print them and fail if any check fails.

use std::path::Path;

use super::{load_settings, Failure, EXIT_FAILURE};
use crate::logging;

pub(super) fn doctor(path: &Path) -> Result<(), Failure> {
    let _ = logging::init(log::LevelFilter::Error);
    let settings = load_settings(path)?;
    let report = crate::tools::doctor::run(&settings);
    crate::tools::doctor::print(&report, &mut std::io::stdout().lock()).map_err(|e| Failure {
        error: e.into(),
        code: EXIT_FAILURE,
    })?;
    if report.failed() {
        return Err(Failure {
            error: anyhow::anyhow!("some checks failed (see the fix hints above)"),
            code: EXIT_FAILURE,
        });
    }
    Ok(())
}
