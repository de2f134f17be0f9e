//! `spotter run`: load the configuration, set up logging as it says and hand
//! over to the daemon ([`crate::app::run`]).

use std::path::PathBuf;

use super::{fail, Failure, EXIT_CONFIG, EXIT_FAILURE};
use crate::{config, logging};

pub(super) fn run(path: PathBuf, litert_lib: Option<PathBuf>) -> Result<(), Failure> {
    // Log to stderr until the config says otherwise; errors in the
    // config itself must be visible.
    let mut settings = config::load(&path)
        .map_err(|e| {
            let _ = logging::init(log::LevelFilter::Info);
            anyhow::Error::new(e).context("invalid configuration")
        })
        .map_err(fail(EXIT_CONFIG))?;
    logging::init(logging::parse_level(&settings.daemon.log_level)).map_err(|e| Failure {
        error: e.into(),
        code: EXIT_FAILURE,
    })?;
    if litert_lib.is_some() {
        settings.model.litert_lib = litert_lib;
    }
    crate::app::run(settings, Some(path)).map_err(fail(EXIT_FAILURE))
}
