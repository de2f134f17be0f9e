//! The Raspberry Pi backend (`rppal`). Lines are BCM GPIO numbers: `17`,
//! `gpiochip0:17` (the chip part is ignored: rppal finds the Pi's GPIO
//! controller itself). Line names need the gpiocdev backend.
//!
//! rppal is retired upstream (no fixes since mid-2025); it supports the
//! boards up to the Pi 5. The gpiocdev backend drives the same pins on any
//! Pi with a current kernel, so `backend = "gpiocdev"` is the way out.

use std::time::{Duration, Instant};

use rppal::gpio::{InputPin, OutputPin, Trigger};

use super::{Bias, Edge, EdgeEvent, Gpio, GpioError, InputConfig, InputLine, LineId, OutputLine};

/// The Pi's GPIO controller, opened once.
pub(crate) struct RppalGpio {
    gpio: rppal::gpio::Gpio,
}

fn map_err(line: &LineId, e: rppal::gpio::Error) -> GpioError {
    match e {
        rppal::gpio::Error::PermissionDenied(device) => {
            GpioError::from_os(line, &device, nix::libc::EACCES, String::new())
        }
        rppal::gpio::Error::PinUsed(_) => GpioError::Busy {
            line: line.to_string(),
        },
        rppal::gpio::Error::Io(io) => GpioError::from_os(
            line,
            "the Pi's GPIO chip",
            io.raw_os_error().unwrap_or(0),
            io.to_string(),
        ),
        other => GpioError::Io {
            line: line.to_string(),
            message: other.to_string(),
        },
    }
}

fn bcm(line: &LineId) -> Result<u8, GpioError> {
    match line {
        LineId::Offset { offset, .. } if *offset <= 53 => Ok(*offset as u8),
        LineId::Offset { offset, .. } => {
            Err(GpioError::Unsupported { line: line.to_string(), message: format!("BCM GPIO {offset} does not exist (0..=53)") })
        }
        LineId::Name(_) => Err(GpioError::Unsupported {
            line: line.to_string(),
            message: "the rppal backend takes BCM numbers (e.g. `17`); use backend = \"gpiocdev\" for line names".into(),
        }),
    }
}

impl RppalGpio {
    pub(crate) fn new() -> Result<RppalGpio, GpioError> {
        let gpio = rppal::gpio::Gpio::new()
            .map_err(|e| map_err(&LineId::Name("(controller)".into()), e))?;
        Ok(RppalGpio { gpio })
    }
}

impl Gpio for RppalGpio {
    fn name(&self) -> &'static str {
        "rppal"
    }

    fn input(&mut self, cfg: &InputConfig) -> Result<Box<dyn InputLine>, GpioError> {
        let pin = self
            .gpio
            .get(bcm(&cfg.line)?)
            .map_err(|e| map_err(&cfg.line, e))?;
        let mut pin = match cfg.bias {
            Bias::PullUp => pin.into_input_pullup(),
            Bias::PullDown => pin.into_input_pulldown(),
            Bias::Disabled => pin.into_input(),
        };
        let trigger = match cfg.edge {
            Edge::Rising => Trigger::RisingEdge,
            Edge::Falling => Trigger::FallingEdge,
            Edge::Both => Trigger::Both,
        };
        let debounce = (!cfg.debounce.is_zero()).then_some(cfg.debounce);
        pin.set_interrupt(trigger, debounce)
            .map_err(|e| map_err(&cfg.line, e))?;
        Ok(Box::new(PiInput {
            pin,
            line: cfg.line.clone(),
        }))
    }

    fn output(
        &mut self,
        line: &LineId,
        initial_high: bool,
    ) -> Result<Box<dyn OutputLine>, GpioError> {
        let pin = self.gpio.get(bcm(line)?).map_err(|e| map_err(line, e))?;
        let mut pin = if initial_high {
            pin.into_output_high()
        } else {
            pin.into_output_low()
        };
        // Spotter drives the safe state itself on shutdown; rppal's reset
        // would instead return the pin to its previous mode (often input).
        pin.set_reset_on_drop(false);
        Ok(Box::new(PiOutput { pin }))
    }
}

struct PiInput {
    pin: InputPin,
    line: LineId,
}

impl InputLine for PiInput {
    fn wait_edge(&mut self, timeout: Duration) -> Result<Option<EdgeEvent>, GpioError> {
        let ev = self
            .pin
            .poll_interrupt(false, Some(timeout))
            .map_err(|e| map_err(&self.line, e))?;
        Ok(ev.map(|ev| EdgeEvent {
            rising: ev.trigger == Trigger::RisingEdge,
            at: Instant::now(),
        }))
    }

    fn is_high(&mut self) -> Result<bool, GpioError> {
        Ok(self.pin.is_high())
    }
}

struct PiOutput {
    pin: OutputPin,
}

impl OutputLine for PiOutput {
    fn set_high(&mut self, high: bool) -> Result<(), GpioError> {
        if high {
            self.pin.set_high();
        } else {
            self.pin.set_low();
        }
        Ok(())
    }
}
