//! The Linux GPIO character device backend (uAPI v2, via `gpiocdev`): works
//! on every board with a `/dev/gpiochipN`, and with the kernel's gpio-sim.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use gpiocdev::line::{Bias as CBias, EdgeDetection, EdgeKind, Value};
use gpiocdev::Request;

use super::{Bias, Edge, EdgeEvent, Gpio, GpioError, InputConfig, InputLine, LineId, OutputLine};

/// The consumer name other tools (`gpioinfo`) show for Spotter's lines.
const CONSUMER: &str = "spotter";

/// Requests lines through the GPIO character devices.
#[derive(Debug, Default)]
pub(crate) struct CdevGpio;

fn map_err(line: &LineId, chip: &std::path::Path, e: gpiocdev::Error) -> GpioError {
    let device = chip.display().to_string();
    let errno = match &e {
        gpiocdev::Error::Os(n) => Some(n.0),
        gpiocdev::Error::Uapi(_, gpiocdev_uapi::Error::Os(n)) => Some(n.0),
        _ => None,
    };
    match errno {
        Some(n) => GpioError::from_os(line, &device, n, e.to_string()),
        None => GpioError::Io {
            line: line.to_string(),
            message: format!("{device}: {e}"),
        },
    }
}

/// The chip and offset of a line, looking names up on every chip.
fn locate(line: &LineId) -> Result<(PathBuf, u32), GpioError> {
    match line {
        LineId::Offset { chip, offset } => Ok((LineId::chip_path(chip), *offset)),
        LineId::Name(name) => {
            let found =
                gpiocdev::find_named_line(name).ok_or_else(|| GpioError::no_such_line(line))?;
            Ok((found.chip, found.info.offset))
        }
    }
}

impl Gpio for CdevGpio {
    fn name(&self) -> &'static str {
        "gpiocdev"
    }

    fn input(&mut self, cfg: &InputConfig) -> Result<Box<dyn InputLine>, GpioError> {
        let (chip, offset) = locate(&cfg.line)?;
        let mut b = Request::builder();
        b.on_chip(&chip)
            .with_consumer(CONSUMER)
            .with_line(offset)
            .as_input();
        b.with_edge_detection(match cfg.edge {
            Edge::Rising => EdgeDetection::RisingEdge,
            Edge::Falling => EdgeDetection::FallingEdge,
            Edge::Both => EdgeDetection::BothEdges,
        });
        b.with_bias(match cfg.bias {
            Bias::PullUp => CBias::PullUp,
            Bias::PullDown => CBias::PullDown,
            Bias::Disabled => CBias::Disabled,
        });
        if !cfg.debounce.is_zero() {
            b.with_debounce_period(cfg.debounce);
        }
        let req = b.request().map_err(|e| map_err(&cfg.line, &chip, e))?;
        Ok(Box::new(CdevInput {
            req,
            line: cfg.line.clone(),
            chip,
            offset,
        }))
    }

    fn output(
        &mut self,
        line: &LineId,
        initial_high: bool,
    ) -> Result<Box<dyn OutputLine>, GpioError> {
        let (chip, offset) = locate(line)?;
        let req = Request::builder()
            .on_chip(&chip)
            .with_consumer(CONSUMER)
            .with_line(offset)
            .as_output(Value::from(initial_high))
            .request()
            .map_err(|e| map_err(line, &chip, e))?;
        Ok(Box::new(CdevOutput {
            req,
            line: line.clone(),
            chip,
            offset,
        }))
    }
}

struct CdevInput {
    req: Request,
    line: LineId,
    chip: PathBuf,
    offset: u32,
}

impl InputLine for CdevInput {
    fn wait_edge(&mut self, timeout: Duration) -> Result<Option<EdgeEvent>, GpioError> {
        if !self
            .req
            .wait_edge_event(timeout)
            .map_err(|e| map_err(&self.line, &self.chip, e))?
        {
            return Ok(None);
        }
        let ev = self
            .req
            .read_edge_event()
            .map_err(|e| map_err(&self.line, &self.chip, e))?;
        Ok(Some(EdgeEvent {
            rising: ev.kind == EdgeKind::Rising,
            at: Instant::now(),
        }))
    }

    fn is_high(&mut self) -> Result<bool, GpioError> {
        let v = self
            .req
            .value(self.offset)
            .map_err(|e| map_err(&self.line, &self.chip, e))?;
        Ok(v == Value::Active)
    }
}

struct CdevOutput {
    req: Request,
    line: LineId,
    chip: PathBuf,
    offset: u32,
}

impl OutputLine for CdevOutput {
    fn set_high(&mut self, high: bool) -> Result<(), GpioError> {
        self.req
            .set_value(self.offset, Value::from(high))
            .map_err(|e| map_err(&self.line, &self.chip, e))
    }
}
