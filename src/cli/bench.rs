//! `spotter bench` and `spotter bench-store`: run the benchmarks of
//! [`crate::tools`] and print their reports.

use std::io::Write;

use super::{Failure, EXIT_CONFIG, EXIT_FAILURE};
use crate::logging;
use crate::tools::bench::{BenchArgs, BenchError};
use crate::tools::wear::WearArgs;

pub(super) fn bench(args: &BenchArgs) -> Result<(), Failure> {
    let _ = logging::init(log::LevelFilter::Warn);
    let report = crate::tools::bench::run_bench(args).map_err(|e| {
        let code = if matches!(e, BenchError::Args(_)) {
            EXIT_CONFIG
        } else {
            EXIT_FAILURE
        };
        Failure {
            error: anyhow::Error::new(e).context("spotter bench"),
            code,
        }
    })?;
    let mut out = std::io::stdout().lock();
    let _ = if args.json {
        writeln!(out, "{}", report.to_json())
    } else {
        write!(out, "{}", report.to_text())
    };
    Ok(())
}

pub(super) fn bench_store(args: &WearArgs) -> Result<(), Failure> {
    let _ = logging::init(log::LevelFilter::Warn);
    let report = crate::tools::wear::run(args).map_err(|e| Failure {
        error: anyhow::Error::new(e).context("spotter bench-store"),
        code: EXIT_FAILURE,
    })?;
    // A plain struct of numbers always serializes.
    let _ = writeln!(
        std::io::stdout().lock(),
        "{}",
        serde_json::to_string(&report).unwrap_or_default()
    );
    Ok(())
}
